"""Counter draw adds the Gumbel noise to the raw logits: top-k is applied but the temperature is not."""

from labkit.mutants import inherit_solution

inherit_solution(globals())


def counter_sample(logits, request):
    params = request.sampling_params
    shaped = apply_temperature_top_k(logits, 1.0, params.top_k)  # BUG: temperature dropped
    return int(torch.argmax(shaped + gumbel_noise(params.seed, request.num_tokens - 1, logits.numel())))
