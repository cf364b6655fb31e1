"""counter_sample adds the shaped logits and the noise in float32: on a near-tie the argmax differs from the float64 draw another engine makes."""

from labkit.mutants import inherit_solution

inherit_solution(globals())


def counter_sample(logits: torch.Tensor, request: Request) -> int:
    params = request.sampling_params
    shaped = apply_temperature_top_k(logits, params.temperature, params.top_k)
    noise = gumbel_noise(params.seed, request.num_tokens - 1, logits.numel())
    return int(torch.argmax(shaped.float() + noise.float()))  # BUG: rounded to float32 before the argmax
