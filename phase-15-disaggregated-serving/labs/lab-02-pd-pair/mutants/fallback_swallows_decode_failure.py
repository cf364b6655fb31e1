"""Fallback that also swallows decode failures: a dead decode yields 200 with an empty body instead of 503."""

from labkit.mutants import inherit_solution

inherit_solution(globals())

_Solution = PDProxyPolicy


class PDProxyPolicy(_Solution):
    async def handle(self, ctx, path, body, request_id):
        reply = await super().handle(ctx, path, body, request_id)
        if isinstance(reply, ErrorReply) and reply.status == 503:
            return ErrorReply(200, {})
        return reply
