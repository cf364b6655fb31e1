"""fleetsim.fit: a profile fitted from timed steps and idle first tokens (given code; ungraded)."""

from __future__ import annotations

import dataclasses
import random

import numpy as np
import pytest

from fleetsim.fit import TERMS, FirstToken, Step, fit, jitter_sigma, nnls
from fleetsim.profile import LinearProfile, chunk_pairs, cpu_profile

pytestmark = pytest.mark.ungraded


def test_nnls_matches_least_squares_inside_and_clamps_at_zero():
    rng = np.random.default_rng(0)
    a = rng.random((30, 3))
    x_true = np.array([2.0, 0.5, 1.0])
    assert np.allclose(nnls(a, a @ x_true), x_true, atol=1e-9)
    b = a @ np.array([2.0, -1.0, 1.0])  # the unconstrained answer has a negative coefficient
    x = nnls(a, b)
    assert (x >= 0).all() and x[1] == 0.0, x
    free = np.linalg.lstsq(a[:, [0, 2]], b, rcond=None)[0]  # with x1 = 0 the rest is plain least squares
    assert np.allclose(x[[0, 2]], free, atol=1e-9)


def _observations(true: LinearProfile, noise: float, seed: int = 1) -> list:
    """What a calibration run times, generated from ``true`` with lognormal noise."""
    rng = random.Random(seed)

    def ms(value: float) -> float:
        return value * rng.lognormvariate(0.0, noise)

    obs: list = []
    for k in (1, 2, 3, 4, 6, 8):
        obs += [Step(ms(true.step_ms(0, 0, k, 0)), 0, 0, k, 0, "plain") for _ in range(30)]
    obs += [
        Step(ms(true.step_ms(32, chunk_pairs(0, 32), 5, 0, 1)), 32, chunk_pairs(0, 32), 5, 1, "local")
    ] * 12
    obs += [
        Step(ms(true.step_ms(1, chunk_pairs(31, 1), 5, 0, 1)), 1, chunk_pairs(31, 1), 5, 1, "handed-off")
    ] * 12
    for k in (1, 3, 5):
        start = 0
        while start < 1500:
            c = min(64 - k, 1500 - start)
            j = int(start + c == 1500)
            obs.append(
                Step(
                    ms(true.step_ms(c, chunk_pairs(start, c), k, 0, j)),
                    c,
                    chunk_pairs(start, c),
                    k,
                    j,
                    "chunk",
                )
            )
            start += c
    for n in (64, 256, 512, 1024, 1500):
        obs.append(Step(ms(true.step_ms(n, chunk_pairs(0, n), 1, 0, 1)), n, chunk_pairs(0, n), 1, 1, "whole"))
    local = (Step(0, 32, chunk_pairs(0, 32), 0, 1),)
    handed = (Step(0, 32, chunk_pairs(0, 32), 0, 0), Step(0, 1, chunk_pairs(31, 1), 0, 1))
    for _ in range(12):
        obs.append(
            FirstToken(ms(true.request_overhead_ms + true.step_ms(32, chunk_pairs(0, 32), 0, 0, 1)), local)
        )
        obs.append(FirstToken(ms(true.request_overhead_ms + true.link_latency_ms + true.step_ms(32, chunk_pairs(0, 32), 0, 0)
                                 + true.step_ms(1, chunk_pairs(31, 1), 0, 0, 1)), handed, True))  # fmt: skip
    return obs


def test_fit_recovers_the_costs_that_made_the_observations():
    true = dataclasses.replace(cpu_profile(), per_decode_seq_ms=0.3, per_join_ms=2.0)
    got, report = fit(_observations(true, noise=0.0), LinearProfile("x", 0.0))
    for term in TERMS:
        assert getattr(got, term) == pytest.approx(getattr(true, term), rel=1e-3, abs=1e-6), term
    assert all(abs(g["error"]) < 1e-6 for g in report["groups"].values()), report["groups"]


def test_fit_with_noise_stays_close_and_never_goes_negative():
    true = cpu_profile()  # per_decode_seq_ms is 0: noise must not push it below
    got, report = fit(_observations(true, noise=0.05), LinearProfile("x", 0.0))
    assert all(getattr(got, t) >= 0 for t in TERMS), got
    for t in ("step_ms_fixed", "per_prefill_token_ms", "request_overhead_ms", "link_latency_ms"):
        assert getattr(got, t) == pytest.approx(getattr(true, t), rel=0.2), t
    assert all(abs(g["error"]) < 0.05 for g in report["groups"].values()), report["groups"]


def test_fixed_terms_are_held_and_jitter_is_the_log_iqr():
    true = cpu_profile()
    got, report = fit(_observations(true, 0.0), LinearProfile("x", 0.0), fixed={"link_latency_ms": 5.0})
    assert got.link_latency_ms == 5.0 and report["fixed"] == ["link_latency_ms"]
    rng = random.Random(3)
    steps = {k: [28.0 * rng.lognormvariate(0, 0.1) for _ in range(2000)] for k in (1, 2)}
    assert jitter_sigma(steps) == pytest.approx(0.1, rel=0.1)
    assert jitter_sigma({1: [28.0, 29.0]}) == 0.0  # too few steps to say
