"""A prefill 4xx without a JSON body is answered with that body as is: the client gets `null`, no error object."""

from labkit.mutants import inherit_solution

inherit_solution(globals())

_Solution = PDProxyPolicy


class PDProxyPolicy(_Solution):
    async def handle(self, ctx, path, body, request_id):
        reply = await super().handle(ctx, path, body, request_id)
        if (
            isinstance(reply, ErrorReply)
            and reply.status < 500
            and reply.body.get("error", {}).get("type") == "prefill_error"
        ):
            return ErrorReply(reply.status, None)
        return reply
