"""A fallback sends decode the client's body as received: a client's kv_transfer_params steer decode's NIXL."""

from labkit.mutants import inherit_solution

inherit_solution(globals())

_Solution = PDProxyPolicy


class _RawBodyOnFallback:
    def __init__(self, ctx, body):
        self._ctx, self._body, self.prefill_tried = ctx, body, False

    def __getattr__(self, name):
        return getattr(self._ctx, name)

    async def post_json(self, *args, **kw):
        self.prefill_tried = True
        return await self._ctx.post_json(*args, **kw)

    async def open_stream(self, role, url, path, body, headers=None):
        if self.prefill_tried and "kv_transfer_params" not in body:  # prefill failed: decode alone
            body = self._body
        return await self._ctx.open_stream(role, url, path, body, headers)


class PDProxyPolicy(_Solution):
    async def handle(self, ctx, path, body, request_id):
        return await super().handle(_RawBodyOnFallback(ctx, body), path, body, request_id)
