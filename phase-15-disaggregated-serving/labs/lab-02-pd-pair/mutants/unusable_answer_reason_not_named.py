"""Every unusable prefill answer is reported as "no_kv_transfer_params": ill-typed params look absent."""

from labkit.mutants import inherit_solution

inherit_solution(globals())

_Solution = PDProxyPolicy


class PDProxyPolicy(_Solution):
    async def handle(self, ctx, path, body, request_id):
        reply = await super().handle(ctx, path, body, request_id)
        if isinstance(reply, Relay) and reply.reason == BAD_KV_PARAMS:
            reply.reason = NO_KV_PARAMS
        return reply
