"""Compares pool costs exactly: 3 x $1.10 loses to 1 x $3.30 listed after it."""

from labkit.mutants import inherit_solution

inherit_solution(globals())


def cheapest_fleet(rate_rps: float, output_tokens: int, offers: list[Offer]) -> FleetCost:
    if number("rate_rps", rate_rps) <= 0:
        raise ValueError(f"rate_rps: must be > 0, got {rate_rps!r}")
    out = number("output_tokens", output_tokens, integer=True)
    if out < 1:
        raise ValueError(f"output_tokens: must be >= 1, got {output_tokens!r}")
    offers = list(offers)
    if not offers:
        raise ValueError("offers: need at least one offer per role")
    best: dict[str, tuple[float, int, Offer]] = {}
    for o in offers:
        if not isinstance(o, Offer):
            raise TypeError(f"offers: each must be an Offer, got {type(o).__name__}")
        if o.role not in ("prefill", "decode"):
            raise ValueError(f"offers: a role is 'prefill' or 'decode', got {o.role!r}")
        for value in (o.price_per_hour, o.rps):
            if number("offers", value) < 0:
                raise ValueError(f"offers: price and rps must be >= 0, got {o!r}")
        if o.rps == 0:
            continue
        count = math.ceil(rate_rps / o.rps * (1 - 1e-9))
        cost = count * o.price_per_hour
        if o.role not in best or cost < best[o.role][0]:
            best[o.role] = (cost, count, o)
    for role in ("prefill", "decode"):
        if role not in best:
            raise ValueError(f"offers: no offer can serve the {role} role")
    (pc, pn, po), (dc, dn, do) = best["prefill"], best["decode"]
    per_hour = pc + dc
    return FleetCost(po, pn, do, dn, per_hour, per_hour / (rate_rps * 3600 * out) * 1e6)
