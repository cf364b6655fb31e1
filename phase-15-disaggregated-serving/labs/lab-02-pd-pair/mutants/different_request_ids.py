"""Different request ids on the two sides: decode gets a fresh X-Request-Id, so the hops cannot be correlated."""

import uuid

from labkit.mutants import inherit_solution

inherit_solution(globals())

_Solution = PDProxyPolicy


class PDProxyPolicy(_Solution):
    async def handle(self, ctx, path, body, request_id):
        prefill_url = self.choose_prefill()
        decode_url = self.choose_decode()
        decode_body, mode, reason = body, "disaggregated", None
        if prefill_url is None:
            mode, reason = "fallback", "no_prefill"
        else:
            pbody, pheaders = prefill_request(body, request_id)
            try:
                answer = await ctx.post_json("prefill", prefill_url, path, pbody, pheaders)
                decode_body = decode_request(body, answer)
            except UpstreamError as err:
                if not self.should_fall_back(err):
                    return ErrorReply(err.status or 502, err.body or {"error": {"message": str(err)}})
                mode, reason = "fallback", err.kind
            except ValueError:
                mode, reason = "fallback", "no_kv_transfer_params"
        try:
            stream = await ctx.open_stream(
                "decode", decode_url, path, decode_body, {"X-Request-Id": str(uuid.uuid4())}
            )
        except UpstreamError as err:
            return ErrorReply(503, {"error": {"message": str(err), "upstream": decode_url, "kind": err.kind}})
        return Relay(stream, mode=mode, reason=reason, prefill_url=prefill_url)
