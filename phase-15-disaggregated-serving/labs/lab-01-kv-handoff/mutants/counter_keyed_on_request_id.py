"""Counter draw keyed on the request id instead of the seed: another engine's name for the request gives another stream."""

import zlib

from labkit.mutants import inherit_solution

inherit_solution(globals())


def counter_sample(logits, request):
    params = request.sampling_params
    shaped = apply_temperature_top_k(logits, params.temperature, params.top_k)
    key = zlib.crc32(request.request_id.encode())  # BUG: ids are per engine; only the seed travels as is
    return int(torch.argmax(shaped + gumbel_noise(key, request.num_tokens - 1, logits.numel())))
