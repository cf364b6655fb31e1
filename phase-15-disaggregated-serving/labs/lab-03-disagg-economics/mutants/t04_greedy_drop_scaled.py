"""Drops the most negative term judged on column-scaled costs and refits: a heuristic, not the best non-negative fit."""

from labkit.mutants import inherit_solution

inherit_solution(globals())


def fit_step_model(samples) -> StepModel:
    import numpy as np

    rows, ys = [], []
    for s in samples:
        if not isinstance(s, StepSample):
            raise TypeError(f"samples: each must be a StepSample, got {type(s).__name__}")
        if number("samples", s.step_ms) < 0:
            raise ValueError(f"samples: step_ms must be >= 0, got {s.step_ms!r}")
        for count in (s.prefill_tokens, s.prefill_pairs, s.decode_seqs):
            if number("samples", count, integer=True) < 0:
                raise ValueError(f"samples: counts must be >= 0, got {s!r}")
        rows.append([1.0, s.decode_seqs, s.prefill_tokens, s.prefill_pairs])
        ys.append(float(s.step_ms))
    if not rows:
        raise ValueError("samples: need at least one measured step")
    a, y = np.asarray(rows, float), np.asarray(ys, float)
    scale = np.linalg.norm(a, axis=0)
    scale[scale == 0] = 1.0
    scaled = a / scale  # well-conditioned columns: pairs run to millions
    active = [j for j in range(4) if a[:, j].any()]
    while True:
        coef = np.zeros(4)
        if active:
            coef[active] = np.linalg.lstsq(scaled[:, active], y, rcond=None)[0]
        negative = [j for j in active if coef[j] < 0]
        if not negative:
            break
        active.remove(min(negative, key=lambda j: coef[j]))
    return StepModel(*(float(c) for c in coef / scale))
