"""Counter draw keyed on the index of the token being sampled (num_tokens) instead of the last token's (num_tokens - 1): off by one from vLLM's positions."""

from labkit.mutants import inherit_solution

inherit_solution(globals())


def counter_sample(logits, request):
    params = request.sampling_params
    shaped = apply_temperature_top_k(logits, params.temperature, params.top_k)
    position = request.num_tokens  # BUG: the sampled token's index, not the index of the logits' token
    return int(torch.argmax(shaped + gumbel_noise(params.seed, position, logits.numel())))
