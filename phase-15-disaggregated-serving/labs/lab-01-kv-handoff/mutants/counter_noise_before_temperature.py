"""counter_sample adds the noise to the raw logits and divides the sum by the temperature: the temperature scales the noise too."""

from labkit.mutants import inherit_solution

inherit_solution(globals())


def counter_sample(logits: torch.Tensor, request: Request) -> int:
    params = request.sampling_params
    position = request.num_tokens - 1  # the last token's index in the whole sequence: its logits are these
    masked = apply_temperature_top_k(logits, 1.0, params.top_k)
    return int(
        torch.argmax((masked + gumbel_noise(params.seed, position, logits.numel())) / params.temperature)
    )  # BUG
