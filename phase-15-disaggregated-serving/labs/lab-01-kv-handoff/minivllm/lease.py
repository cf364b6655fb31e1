"""Leases: blocks a source engine keeps for a remote reader (the pull model of a KV handoff).

In the copy-out model (lab tasks 1-3) the source copies a request's K/V into a snapshot and frees its
blocks at once. A pull-mode connector (vLLM's NIXL connector) cannot: the request FINISHES on the
source, and the decode side reads its blocks in place, later, with a one-sided read the source never
sees. So the source keeps the blocks allocated under a lease until either
- the reader's notification arrives (it rides on the read: the read is already done): free them; or
- the lease expires on the SOURCE's clock: free them anyway. Nothing resumes: the request is over here.
Heartbeats from the reader push the deadline out while the reader is still queued.

vLLM 0.32.0: ``nixl/pull_scheduler.py: NixlPullConnectorScheduler.request_finished`` (the request has
finished; ``delay_free_blocks=True``; the deadline ``now + kv_lease_duration``, 30 s by default);
``nixl/base_worker.py: _reap_expired_send_leases`` (expiry reports the blocks as done sending, and the
scheduler frees them), ``_handle_heartbeat`` (``expiry = max(old, now + lease * 2 // 3)``, whole seconds floored, set in
``NixlBaseConnectorWorker.__init__``; the lab's heartbeat uses the exact two thirds of a float lease);
``nixl/pull_worker.py: _get_new_notifs`` (a notification for a lease that is gone is only logged,
"Potentially invalid KV blocks ... were retrieved by a decode worker", and counted).

This file is the bookkeeping only (a table of leases and their states); what export, heartbeats,
expiry and notifications DO to the engine is lab task 5.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from minivllm.clock import ManualClock  # noqa: F401  (kept importable from here)
from minivllm.sequence import Request


class LeaseError(RuntimeError):
    """A lease operation on a lease that does not allow it (an unknown id, one that already ended)."""


class LeaseState(enum.Enum):
    ACTIVE = "active"  # blocks held for the reader
    COMMITTED = "committed"  # the reader's notification came while the blocks were held: freed, read in time
    EXPIRED = "expired"  # the deadline passed first: the source freed the blocks (no notification yet)
    LATE = "late"  # a notification came after expiry: that read may hold someone else's K/V


class ReadVerdict(enum.Enum):
    """What the source answers a reader's notification (the LAB's addition: vLLM's source only logs)."""

    IN_TIME = "in_time"  # the blocks were held until the read finished: the K/V is the request's
    EXPIRED = "expired"  # the lease had expired: the blocks may have been reused before or during the read
    NOT_YOURS = "not_yours"  # another notification already settled this lease, or the id is unknown


@dataclass
class Lease:
    snapshot_id: str
    request: Request  # finished on the source; its block_table is what the lease holds
    deadline: float  # source clock time at which the lease expires (expired once clock() >= deadline)
    lease_s: float  # the lease's length, as exported (heartbeats extend by a fraction of it)
    state: LeaseState = LeaseState.ACTIVE

    def expired(self, now: float) -> bool:
        return now >= self.deadline


class LeaseTable:
    """Every lease an engine has opened, by snapshot id (kept after they end, so a late notification
    is recognised as late instead of looking like an unknown id)."""

    def __init__(self):
        self._leases: dict[str, Lease] = {}
        # Notifications that came for a lease that was not active (vLLM's
        # vllm:nixl_num_notifications_after_expiry counter, nixl/stats.py).
        self.late_notifications = 0

    def open(self, snapshot_id: str, request: Request, deadline: float, lease_s: float) -> Lease:
        if snapshot_id in self._leases:
            raise LeaseError(f"lease {snapshot_id!r} already exists")
        lease = self._leases[snapshot_id] = Lease(snapshot_id, request, deadline, lease_s)
        return lease

    def get(self, snapshot_id: str) -> Lease:
        """The lease, whatever its state; LeaseError for an id this engine never leased."""
        if snapshot_id not in self._leases:
            raise LeaseError(f"no lease {snapshot_id!r} on this engine")
        return self._leases[snapshot_id]

    def __contains__(self, snapshot_id: str) -> bool:
        return snapshot_id in self._leases

    def active(self) -> list[Lease]:
        """Leases still holding blocks (past their deadline or not: expiry takes effect when the source
        reaps it), in the order they were opened."""
        return [lease for lease in self._leases.values() if lease.state == LeaseState.ACTIVE]

    @property
    def held_block_ids(self) -> list[int]:
        return [b for lease in self.active() for b in lease.request.block_table]
