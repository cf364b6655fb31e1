"""An empty prompt returns 0 ms before the model, peak and mfu are validated."""

from labkit.mutants import inherit_solution

inherit_solution(globals())


_solution_prefill_ttft_ms = prefill_ttft_ms


def prefill_ttft_ms(model, prompt_tokens, peak_tflops, mfu):
    if prompt_tokens == 0:
        return 0.0
    return _solution_prefill_ttft_ms(model, prompt_tokens, peak_tflops, mfu)
