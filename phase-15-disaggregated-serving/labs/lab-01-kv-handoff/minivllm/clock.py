"""Clocks: every engine keeps time by its own clock, and two engines' clocks disagree.

A lease's deadline is a number on the SOURCE's clock. A reader on another machine has its own clock:
it reads another number at the same instant (an offset: the machines booted at different times, so
vLLM's ``time.perf_counter()`` epochs differ) and its seconds may be a little longer or shorter (drift).
vLLM estimates the offset once, during the handshake (``nixl/base_worker.py``:
``NixlBaseConnectorWorker._nixl_handshake`` keeps ``remote_perf - (start + end) / 2`` of the round trip
with the lowest latency); drift makes that estimate go stale afterwards.

- ``ManualClock``: true time for tests, moved by hand.
- ``SkewedClock``: one engine's view of a base clock: ``offset + rate * base()``.
- ``estimate_clock_offset``: the handshake's estimate, remote minus local, at the moment it runs.
"""

from __future__ import annotations

from collections.abc import Callable

Clock = Callable[[], float]


class ManualClock:
    """A clock for tests: ``clock()`` returns ``now`` (seconds); ``advance(dt)`` moves it forward."""

    def __init__(self, now: float = 0.0):
        self.now = float(now)

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        if not seconds >= 0:
            raise ValueError(f"a clock does not run backwards ({seconds} s)")
        self.now += seconds


class SkewedClock:
    """An engine's own clock over a shared base clock: it reads ``offset + rate * base()``.

    ``offset`` (seconds) is where it stands when the base reads 0; ``rate`` > 0 is how many of its
    seconds pass per base second (1.0: no drift; 1.001: it runs 0.1 % fast).
    Example: ``SkewedClock(base, offset=-40.0)`` reads 60.0 when ``base`` reads 100.0.
    """

    def __init__(self, base: Clock, offset: float = 0.0, rate: float = 1.0):
        if not rate > 0:
            raise ValueError(f"a clock's rate must be > 0, got {rate}")
        self.base, self.offset, self.rate = base, float(offset), float(rate)

    def __call__(self) -> float:
        return self.offset + self.rate * self.base()


def estimate_clock_offset(local: Clock, remote: Clock) -> float:
    """The handshake's estimate of ``remote() - local()`` now: the remote reading against the midpoint
    of the local readings taken around it (vLLM's ``best_offset``). Add it to a local time to get
    the remote clock's reading at that instant (while neither clock drifts)."""
    start = local()
    remote_now = remote()
    end = local()
    return remote_now - (start + end) / 2
