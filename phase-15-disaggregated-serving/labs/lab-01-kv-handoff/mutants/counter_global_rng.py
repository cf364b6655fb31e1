"""Counter draw takes its noise from torch's global random generator: a hidden state again, which no snapshot carries."""

from labkit.mutants import inherit_solution

inherit_solution(globals())


def counter_sample(logits, request):
    params = request.sampling_params
    shaped = apply_temperature_top_k(logits, params.temperature, params.top_k)
    u = torch.rand(logits.numel(), dtype=torch.float64).clamp_min(1e-300)  # BUG: stateful, process-wide
    return int(torch.argmax(shaped - torch.log(-torch.log(u))))
