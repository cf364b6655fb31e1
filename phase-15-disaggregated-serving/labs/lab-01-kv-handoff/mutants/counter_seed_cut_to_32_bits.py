"""counter_sample keys the noise on the seed's low 32 bits: two 64-bit seeds that share them draw the same stream."""

from labkit.mutants import inherit_solution

inherit_solution(globals())


def counter_sample(logits: torch.Tensor, request: Request) -> int:
    params = request.sampling_params
    shaped = apply_temperature_top_k(logits, params.temperature, params.top_k)
    position = request.num_tokens - 1  # the last token's index in the whole sequence: its logits are these
    noise = gumbel_noise(params.seed & 0xFFFFFFFF, position, logits.numel())  # BUG: the low 32 bits only
    return int(torch.argmax(shaped + noise))
