"""counter_sample appends the token it draws to the request's output: the engine appends it again."""

from labkit.mutants import inherit_solution

inherit_solution(globals())


def counter_sample(logits: torch.Tensor, request: Request) -> int:
    params = request.sampling_params
    shaped = apply_temperature_top_k(logits, params.temperature, params.top_k)
    position = request.num_tokens - 1  # the last token's index in the whole sequence: its logits are these
    token = int(torch.argmax(shaped + gumbel_noise(params.seed, position, logits.numel())))
    request.output_token_ids.append(token)  # BUG: the engine's job
    return token
