"""A text prompt returns 'remote' before the queue limit is checked: only token-id prompts respect it."""

from labkit.mutants import inherit_solution

inherit_solution(globals())

_Solution = PDProxyPolicy  # noqa: F821 - the solution's class, inherited above


class PDProxyPolicy(_Solution):
    def prefill_remotely(self, body):
        prompt = body.get("prompt")
        if not (
            isinstance(prompt, list) and all(isinstance(t, int) and not isinstance(t, bool) for t in prompt)
        ):
            return True  # "the proxy cannot count a text prompt, so it always goes remote"
        return super().prefill_remotely(body)
