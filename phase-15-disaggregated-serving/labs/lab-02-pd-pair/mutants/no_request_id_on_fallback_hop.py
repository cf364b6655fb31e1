"""A fallback's decode hop is sent without X-Request-Id (only the handoff path sets the header)."""

from labkit.mutants import inherit_solution

inherit_solution(globals())

_Solution = PDProxyPolicy


class _NoIdUnlessHandoff:
    def __init__(self, ctx):
        self._ctx = ctx

    def __getattr__(self, name):
        return getattr(self._ctx, name)

    async def open_stream(self, role, url, path, body, headers=None):
        if "kv_transfer_params" not in body:
            headers = None
        return await self._ctx.open_stream(role, url, path, body, headers)


class PDProxyPolicy(_Solution):
    async def handle(self, ctx, path, body, request_id):
        if not self.prefill_remotely(body):
            return await super().handle(ctx, path, body, request_id)
        return await super().handle(_NoIdUnlessHandoff(ctx), path, body, request_id)
