"""The local (short prompt) decode hop is sent without X-Request-Id: decode invents one, tracing breaks."""

from labkit.mutants import inherit_solution

inherit_solution(globals())

_Solution = PDProxyPolicy


class PDProxyPolicy(_Solution):
    async def handle(self, ctx, path, body, request_id):
        if not self.prefill_remotely(body):
            url = self.choose_decode()
            stream = await ctx.open_stream("decode", url, path, sanitize_request(body))
            return Relay(stream, mode="local", reason="short_prompt")
        return await super().handle(ctx, path, body, request_id)
