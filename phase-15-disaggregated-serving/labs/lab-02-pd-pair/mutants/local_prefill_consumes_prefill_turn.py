"""A short prompt still advances the prefill round-robin: the prefill pool is no longer balanced."""

from labkit.mutants import inherit_solution

inherit_solution(globals())


class PDProxyPolicy(PDProxyPolicy):  # noqa: F821 - the solution's class, inherited above
    async def handle(self, ctx, path, body, request_id):
        if not self.prefill_remotely(body):
            self.choose_prefill()
        return await super().handle(ctx, path, body, request_id)
