"""A handed-off request stays on the prefill count until its decode hop has opened, not until prefill answered."""

from labkit.mutants import inherit_solution

inherit_solution(globals())

_Solution = PDProxyPolicy  # noqa: F821 - the solution's class, inherited above


class _HoldUntilDecode:
    def __init__(self, ctx, policy):
        self._ctx, self._policy, self.held = ctx, policy, False

    def __getattr__(self, name):
        return getattr(self._ctx, name)

    async def post_json(self, *args, **kw):
        answer = await self._ctx.post_json(*args, **kw)
        self._policy._prefill_inflight += 1
        self.held = True
        return answer

    async def open_stream(self, *args, **kw):
        try:
            return await self._ctx.open_stream(*args, **kw)
        finally:
            if self.held:
                self._policy._prefill_inflight -= 1
                self.held = False


class PDProxyPolicy(_Solution):
    async def handle(self, ctx, path, body, request_id):
        return await super().handle(_HoldUntilDecode(ctx, self), path, body, request_id)
