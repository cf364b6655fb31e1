"""counter_sample adds the Gumbel noise to the probabilities instead of the logits: the wrong distribution."""

from labkit.mutants import inherit_solution

inherit_solution(globals())


def counter_sample(logits: torch.Tensor, request: Request) -> int:
    params = request.sampling_params
    shaped = apply_temperature_top_k(logits, params.temperature, params.top_k)
    position = request.num_tokens - 1  # the last token's index in the whole sequence: its logits are these
    probs = torch.softmax(shaped, dim=-1)
    return int(torch.argmax(probs + gumbel_noise(params.seed, position, logits.numel())))  # BUG
