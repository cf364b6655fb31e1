"""An empty prompt returns a zero stall and a zero gap before anything is validated."""

from labkit.mutants import inherit_solution

inherit_solution(globals())


_solution_prefill_stall = prefill_stall


def prefill_stall(step, prompt_tokens, decode_batch, *, token_budget=None, decode_context=0):
    if prompt_tokens == 0:
        return Stall(0.0, 0.0)
    return _solution_prefill_stall(
        step, prompt_tokens, decode_batch, token_budget=token_budget, decode_context=decode_context
    )
