"""Counter draw keyed on the position within the output (len(output_token_ids)) rather than in the whole sequence."""

from labkit.mutants import inherit_solution

inherit_solution(globals())


def counter_sample(logits, request):
    params = request.sampling_params
    shaped = apply_temperature_top_k(logits, params.temperature, params.top_k)
    position = len(request.output_token_ids)  # BUG: the prompt is not counted
    return int(torch.argmax(shaped + gumbel_noise(params.seed, position, logits.numel())))
