"""The decode upstream is chosen only once prefill answered: a request prefill refuses takes no decode turn, and the rotation drifts from the docstring's step 1."""

from labkit.mutants import inherit_solution

inherit_solution(globals())

_Solution = PDProxyPolicy  # noqa: F821 - the solution's class, inherited above


class PDProxyPolicy(_Solution):
    async def handle(self, ctx: ProxyContext, path: str, body: dict, request_id: str) -> Relay | ErrorReply:
        headers = {"X-Request-Id": request_id}
        remote = self.prefill_remotely(body)
        prefill_url = self.choose_prefill() if remote else None
        decode_body, mode, reason, answer = None, "disaggregated", None, None
        if not remote:
            mode, reason = "local", "prefill_busy" if self.prefill_busy() else "short_prompt"
        elif prefill_url is None:
            mode, reason = "fallback", "no_prefill"
        else:
            pbody, pheaders = prefill_request(body, request_id)
            try:
                self._prefill_inflight += 1
                try:
                    answer = await ctx.post_json("prefill", prefill_url, path, pbody, pheaders)
                finally:
                    self._prefill_inflight -= 1
            except UpstreamError as err:
                if not self.should_fall_back(err):
                    err_body = err.body if isinstance(err.body, dict) else {
                        "error": {"message": str(err), "type": "prefill_error", "upstream": err.url}}  # fmt: skip
                    return ErrorReply(err.status or 502, err_body)
                mode, reason = "fallback", err.kind
            else:
                problem = prefill_answer_problem(answer)
                if problem is None:
                    decode_body = decode_request(body, answer)
                else:
                    mode, reason = "fallback", problem
        decode_url = self.choose_decode()
        if decode_body is None:
            decode_body = sanitize_request(body)
        try:
            stream = await ctx.open_stream("decode", decode_url, path, decode_body, headers)
        except UpstreamError as err:
            return ErrorReply(503, {"error": {
                "message": f"decode upstream {decode_url} is unavailable ({err.kind}); nothing can serve this request",
                "type": "decode_unavailable", "upstream": decode_url, "kind": err.kind, "code": 503}})  # fmt: skip
        except asyncio.CancelledError:
            if mode == "disaggregated":
                release = release_request(body, answer)
                rheaders = {"X-Request-Id": request_id + "-release"}
                task = asyncio.ensure_future(ctx.post_json("decode", decode_url, path, release, rheaders))
                self._releases.add(task)

                def done(t: asyncio.Task) -> None:
                    self._releases.discard(t)
                    if not t.cancelled():
                        t.exception()  # retrieved: a failed release is ignored (best effort)

                task.add_done_callback(done)
            raise
        return Relay(stream, mode=mode, reason=reason, prefill_url=prefill_url)
