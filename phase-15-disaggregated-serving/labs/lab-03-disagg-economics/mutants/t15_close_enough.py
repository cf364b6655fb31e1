"""A cheapest-first search that stops at the first plan within 0.05 of the target attainment (0.85 for 0.9):
"close enough" is not meeting the SLOs."""

from labkit.mutants import inherit_solution

inherit_solution(globals())


def design_fleet(scenario: Scenario) -> Plan:
    from fleetsim.plans import price, score

    plans = [Plan(hw, n, budget=b) for hw in scenario.menu for n in range(1, scenario.max_instances + 1)
             for b in (None, 512)]  # fmt: skip
    plans += [Plan(d_hw, d, p_hw, p, threshold=t, budget=b)
              for p_hw in scenario.menu for d_hw in scenario.menu
              for p in range(1, scenario.max_instances) for d in range(1, scenario.max_instances - p + 1)
              for t in (None, 512) for b in (None, 512)]  # fmt: skip
    for plan in sorted(plans, key=lambda q: (price(q), q.prefill + q.decode)):
        if score(plan, scenario).attained >= scenario.target - 0.05:
            return plan
    return Plan(scenario.menu[0], scenario.max_instances)
