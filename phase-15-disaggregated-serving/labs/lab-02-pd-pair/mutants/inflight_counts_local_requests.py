"""Every request is counted as in flight, local ones too: a short prompt on decode makes prefill 'busy'."""

from labkit.mutants import inherit_solution

inherit_solution(globals())

_Solution = PDProxyPolicy  # noqa: F821 - the solution's class, inherited above


class PDProxyPolicy(_Solution):
    async def handle(self, ctx, path, body, request_id):
        if self.prefill_remotely(body):
            return await super().handle(ctx, path, body, request_id)
        self._prefill_inflight += 1
        try:
            return await super().handle(ctx, path, body, request_id)
        finally:
            self._prefill_inflight -= 1
