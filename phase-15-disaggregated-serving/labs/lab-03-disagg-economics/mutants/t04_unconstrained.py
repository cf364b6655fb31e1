"""Plain least squares: a negative cost is kept."""

from labkit.mutants import inherit_solution

inherit_solution(globals())


def fit_step_model(samples) -> StepModel:
    import numpy as np

    rows, ys = [], []
    for s in samples:
        if not isinstance(s, StepSample):
            raise TypeError(f"samples: each must be a StepSample, got {type(s).__name__}")
        if (
            isinstance(s.step_ms, bool)
            or not isinstance(s.step_ms, Real)
            or not math.isfinite(s.step_ms)
            or s.step_ms < 0
        ):
            raise ValueError(f"samples: step_ms must be a finite number >= 0, got {s.step_ms!r}")  # fmt: skip
        rows.append([1.0, s.decode_seqs, s.prefill_tokens, s.prefill_pairs])
        ys.append(float(s.step_ms))
    if not rows:
        raise ValueError("samples: need at least one measured step")
    a, y = np.asarray(rows, float), np.asarray(ys, float)
    active = [j for j in range(4) if a[:, j].any()]
    while True:
        coef = np.zeros(4)
        if active:
            coef[active] = np.linalg.lstsq(a[:, active], y, rcond=None)[0]
        negative = []
        if not negative:
            break
        active.remove(min(negative, key=lambda j: coef[j]))  # drop the most negative, refit the rest
    return StepModel(*(float(c) for c in coef))
