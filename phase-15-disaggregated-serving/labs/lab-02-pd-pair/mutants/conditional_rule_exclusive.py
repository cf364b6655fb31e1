"""The conditional rule uses < instead of <=: a prompt of exactly local_prefill_max_tokens is handed off."""

from labkit.mutants import inherit_solution

inherit_solution(globals())


class PDProxyPolicy(PDProxyPolicy):  # noqa: F821 - the solution's class, inherited above
    def prefill_remotely(self, body):
        prompt = body.get("prompt")
        ids = isinstance(prompt, list) and all(isinstance(t, int) and not isinstance(t, bool) for t in prompt)
        return not (ids and 0 < self.local_prefill_max_tokens and len(prompt) < self.local_prefill_max_tokens)
