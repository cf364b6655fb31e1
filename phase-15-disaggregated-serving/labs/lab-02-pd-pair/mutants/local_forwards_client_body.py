"""A short prompt goes to decode exactly as the client sent it: client kv_transfer_params reach decode."""

from labkit.mutants import inherit_solution

inherit_solution(globals())

_Solution = PDProxyPolicy


class PDProxyPolicy(_Solution):
    async def handle(self, ctx, path, body, request_id):
        if not self.prefill_remotely(body):
            url = self.choose_decode()
            stream = await ctx.open_stream("decode", url, path, body, {"X-Request-Id": request_id})
            return Relay(stream, mode="local", reason="short_prompt")
        return await super().handle(ctx, path, body, request_id)
