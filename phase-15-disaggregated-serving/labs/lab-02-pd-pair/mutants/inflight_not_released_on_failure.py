"""A prefill hop that fails (error, timeout, dropped connection) is never taken off the in-flight count."""

from labkit.mutants import inherit_solution

inherit_solution(globals())

_Solution = PDProxyPolicy  # noqa: F821 - the solution's class, inherited above


class _KeepFailedHops:
    def __init__(self, ctx, policy):
        self._ctx, self._policy = ctx, policy

    def __getattr__(self, name):
        return getattr(self._ctx, name)

    async def post_json(self, *args, **kw):
        try:
            return await self._ctx.post_json(*args, **kw)
        except UpstreamError:  # noqa: F821 - from the solution's globals
            self._policy._prefill_inflight += 1  # the count is only released after a good answer
            raise


class PDProxyPolicy(_Solution):
    async def handle(self, ctx, path, body, request_id):
        return await super().handle(_KeepFailedHops(ctx, self), path, body, request_id)
