"""handle hands every prefill answer to decode_request unchecked: an unusable answer raises (HTTP 500)."""

from labkit.mutants import inherit_solution

inherit_solution(globals())

_Solution = PDProxyPolicy


class PDProxyPolicy(_Solution):
    async def handle(self, ctx, path, body, request_id):
        headers = {"X-Request-Id": request_id}
        remote = self.prefill_remotely(body)
        prefill_url = self.choose_prefill() if remote else None
        decode_url = self.choose_decode()
        decode_body, mode, reason = None, "disaggregated", None
        if not remote:
            mode, reason = "local", "short_prompt"
        elif prefill_url is None:
            mode, reason = "fallback", "no_prefill"
        else:
            pbody, pheaders = prefill_request(body, request_id)
            try:
                answer = await ctx.post_json("prefill", prefill_url, path, pbody, pheaders)
            except UpstreamError as err:
                if not self.should_fall_back(err):
                    err_body = err.body if isinstance(err.body, dict) else {"error": {"message": str(err)}}
                    return ErrorReply(err.status or 502, err_body)
                mode, reason = "fallback", err.kind
            else:
                decode_body = decode_request(body, answer)
        if decode_body is None:
            decode_body = sanitize_request(body)
        try:
            stream = await ctx.open_stream("decode", decode_url, path, decode_body, headers)
        except UpstreamError as err:
            return ErrorReply(503, {"error": {"message": str(err), "upstream": decode_url, "kind": err.kind}})
        return Relay(stream, mode=mode, reason=reason, prefill_url=prefill_url)
