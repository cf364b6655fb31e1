"""Leases: blocks a source engine keeps for a remote reader (the pull model of a KV handoff).

In the copy-out model (lab tasks 1-3) the source copies a request's K/V into a snapshot and frees its
blocks at once. A pull-mode connector (vLLM's NIXL connector) cannot: the decode side reads the blocks
in place, later, over RDMA. So the source detaches the request but HOLDS its blocks under a lease:
allocated, counted in usage, usable by nobody, until the reader says it is done (commit: free them) or
the lease ends without a commit (abort or expiry: the request resumes on the source, nothing lost).

This file is the bookkeeping only (a table of leases and their states, and a clock you can drive by
hand in tests); what commit, abort and expiry DO to the engine is lab task 5.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from minivllm.sequence import Request


class LeaseError(RuntimeError):
    """A lease operation that is not allowed now: unknown id, already committed or released, expired."""


class LeaseState(enum.Enum):
    ACTIVE = "active"  # blocks held for a reader
    COMMITTED = "committed"  # the reader has the K/V; the blocks were freed
    RELEASED = "released"  # aborted or expired; the request went back to its engine


class ManualClock:
    """A clock for tests: ``clock()`` returns ``now`` (seconds); ``advance(dt)`` moves it forward."""

    def __init__(self, now: float = 0.0):
        self.now = float(now)

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        if seconds < 0:
            raise ValueError(f"a clock does not run backwards ({seconds} s)")
        self.now += seconds


@dataclass
class Lease:
    snapshot_id: str
    request: Request  # detached from the engine; its block_table is what the lease holds
    deadline: float  # engine clock time at which the lease expires (expired once clock() >= deadline)
    state: LeaseState = LeaseState.ACTIVE

    def expired(self, now: float) -> bool:
        return now >= self.deadline


class LeaseTable:
    """Every lease an engine has opened, by snapshot id (kept after they end, so a late or repeated
    read, commit or release is refused by name instead of looking like an unknown id)."""

    def __init__(self):
        self._leases: dict[str, Lease] = {}

    def open(self, snapshot_id: str, request: Request, deadline: float) -> Lease:
        if snapshot_id in self._leases:
            raise LeaseError(f"lease {snapshot_id!r} already exists")
        lease = self._leases[snapshot_id] = Lease(snapshot_id, request, deadline)
        return lease

    def get(self, snapshot_id: str) -> Lease:
        """The lease, whatever its state; LeaseError for an id this engine never leased."""
        if snapshot_id not in self._leases:
            raise LeaseError(f"no lease {snapshot_id!r} on this engine")
        return self._leases[snapshot_id]

    def active(self) -> list[Lease]:
        """Leases still holding blocks (expired or not: expiry takes effect when someone releases), in
        the order they were opened (the oldest first), whatever their deadlines."""
        return [lease for lease in self._leases.values() if lease.state == LeaseState.ACTIVE]

    @property
    def held_block_ids(self) -> list[int]:
        return [b for lease in self.active() for b in lease.request.block_table]
