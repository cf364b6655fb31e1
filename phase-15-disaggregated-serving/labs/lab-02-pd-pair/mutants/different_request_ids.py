"""Different request ids on the two sides: decode gets a fresh X-Request-Id, so the hops cannot be correlated."""

import uuid

from labkit.mutants import inherit_solution

inherit_solution(globals())

_Solution = PDProxyPolicy


class _FreshIdForDecode:
    def __init__(self, ctx):
        self._ctx = ctx

    def __getattr__(self, name):
        return getattr(self._ctx, name)

    async def open_stream(self, role, url, path, body, headers=None):
        return await self._ctx.open_stream(role, url, path, body, {"X-Request-Id": str(uuid.uuid4())})


class PDProxyPolicy(_Solution):
    async def handle(self, ctx, path, body, request_id):
        return await super().handle(_FreshIdForDecode(ctx), path, body, request_id)
