"""An empty token list is not counted as token ids (all() of nothing is True, so the student adds 'prompt and'): [] goes remote instead of staying local."""

from labkit.mutants import inherit_solution

inherit_solution(globals())

_Solution = PDProxyPolicy  # noqa: F821 - the solution's class, inherited above


class PDProxyPolicy(_Solution):
    def prefill_remotely(self, body: dict) -> bool:
        prompt = body.get("prompt")
        is_token_ids = (
            isinstance(prompt, list)
            and bool(prompt)
            and all(isinstance(t, int) and not isinstance(t, bool) for t in prompt)
        )
        short = (
            0 < self.local_prefill_max_tokens
            and is_token_ids
            and len(prompt) <= self.local_prefill_max_tokens
        )
        return not short and not self.prefill_busy()
