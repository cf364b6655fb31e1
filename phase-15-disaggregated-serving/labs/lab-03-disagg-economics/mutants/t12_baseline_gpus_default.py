"""With gpus, a baseline missing from it is taken as one GPU instead of refused."""

from labkit.mutants import inherit_solution

inherit_solution(globals())


def choose_config(goodputs: dict[str, float], baseline: str, min_gain: float = 0.05, *,
                  gpus: dict[str, int] | None = None) -> str:  # fmt: skip
    if number("min_gain", min_gain) < 0:
        raise ValueError(f"min_gain: must be >= 0, got {min_gain!r}")
    for name, g in goodputs.items():
        if number("goodputs", g) < 0:
            raise ValueError(f"goodputs: {name!r} has a negative goodput {g!r}")
    if baseline not in goodputs:
        raise ValueError(f"baseline: {baseline!r} is not one of the configurations {list(goodputs)}")
    score = dict(goodputs)
    if gpus is not None:
        gpus = {baseline: 1, **gpus}
        for name in goodputs:
            if name not in gpus:
                raise ValueError(f"gpus: no GPU count for {name!r}")
            if number("gpus", gpus[name], integer=True) < 1:
                raise ValueError(f"gpus: {name!r} must use >= 1 GPU, got {gpus[name]!r}")
            score[name] = goodputs[name] / gpus[name]
    bar = score[baseline] * (1 + min_gain)
    best = baseline
    for name, g in score.items():
        if g > bar and (best == baseline or g > score[best]):
            best = name
    return best
