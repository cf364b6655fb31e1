"""Validates while scanning: returns at the first miss before checking the points after it."""

from labkit.mutants import inherit_solution

inherit_solution(globals())


def goodput(rates: list[float], attainments: list[float], target: float = 0.9) -> float:
    if not 0 < number("target", target) <= 1:
        raise ValueError(f"target: must be in (0, 1], got {target!r}")
    rates, attainments = list(rates), list(attainments)
    if not rates or len(rates) != len(attainments):
        raise ValueError(f"attainments: need one per rate, got {len(attainments)} for {len(rates)} rates")
    for i, (r, a) in enumerate(zip(rates, attainments, strict=True)):
        if number("rates", r) <= 0 or (i and r <= rates[i - 1]):
            raise ValueError(f"rates: must be > 0 and strictly increasing, got {rates}")
        if not 0 <= number("attainments", a) <= 1:
            raise ValueError(f"attainments: must be in [0, 1], got {a!r}")
        if a < target:
            if i == 0:
                return 0.0
            r0, a0 = rates[i - 1], attainments[i - 1]
            return r0 + (r - r0) * (a0 - target) / (a0 - a)
    return float(rates[-1])
