"""Checks only step_ms: a StepSample's counts of -5, 1.5 or NaN are fitted (or crash numpy) instead of the rule's error."""

from labkit.mutants import inherit_solution

inherit_solution(globals())


def fit_step_model(samples) -> StepModel:
    from itertools import combinations

    import numpy as np

    rows, ys = [], []
    for s in samples:
        if not isinstance(s, StepSample):
            raise TypeError(f"samples: each must be a StepSample, got {type(s).__name__}")
        if number("samples", s.step_ms) < 0:
            raise ValueError(f"samples: step_ms must be >= 0, got {s.step_ms!r}")
        rows.append([1.0, s.decode_seqs, s.prefill_tokens, s.prefill_pairs])
        ys.append(float(s.step_ms))
    if not rows:
        raise ValueError("samples: need at least one measured step")
    a, y = np.asarray(rows, float), np.asarray(ys, float)
    active = [j for j in range(4) if a[:, j].any()]
    best, best_err = np.zeros(4), float(y @ y)
    for k in range(1, len(active) + 1):
        for keep in combinations(active, k):
            coef = np.zeros(4)
            coef[list(keep)] = np.linalg.lstsq(a[:, keep], y, rcond=None)[0]
            if (coef < 0).any():
                continue
            err = float(np.sum((a @ coef - y) ** 2))
            if err < best_err * (1 - 1e-12):
                best, best_err = coef, err
    return StepModel(*(float(c) for c in best))
