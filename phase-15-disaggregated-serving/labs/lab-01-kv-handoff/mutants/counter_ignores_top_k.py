"""counter_sample divides by the temperature but forgets top-k: tokens outside the top k can win."""

from labkit.mutants import inherit_solution

inherit_solution(globals())


def counter_sample(logits: torch.Tensor, request: Request) -> int:
    params = request.sampling_params
    shaped = logits.double() / params.temperature  # BUG: no top-k
    position = request.num_tokens - 1  # the last token's index in the whole sequence: its logits are these
    return int(torch.argmax(shaped + gumbel_noise(params.seed, position, logits.numel())))
