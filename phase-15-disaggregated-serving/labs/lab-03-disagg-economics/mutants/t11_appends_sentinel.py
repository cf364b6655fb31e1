"""A sentinel bad point is appended to the caller's lists."""

from labkit.mutants import inherit_solution

inherit_solution(globals())


def goodput(rates: list[float], attainments: list[float], target: float = 0.9) -> float:
    if not 0 < number("target", target) <= 1:
        raise ValueError(f"target: must be in (0, 1], got {target!r}")
    if rates and isinstance(rates, list) and isinstance(attainments, list):
        rates.append(rates[-1] * 2)
        attainments.append(0.0)
    if not rates or len(rates) != len(attainments):
        raise ValueError(f"attainments: need one per rate, got {len(attainments)} for {len(rates)} rates")
    for i, r in enumerate(rates):
        if number("rates", r) <= 0 or (i and r <= rates[i - 1]):
            raise ValueError(f"rates: must be > 0 and strictly increasing, got {rates}")
    for a in attainments:
        if not 0 <= number("attainments", a) <= 1:
            raise ValueError(f"attainments: must be in [0, 1], got {a!r}")
    if attainments[0] < target:
        return 0.0
    for i in range(1, len(rates)):
        if attainments[i] < target:
            r0, r1, a0, a1 = rates[i - 1], rates[i], attainments[i - 1], attainments[i]
            return r0 + (r1 - r0) * (a0 - target) / (a0 - a1)
    return float(rates[-1])
