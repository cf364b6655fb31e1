"""The KV link between prefill and decode: transfers share it one at a time.

A transfer of ``nbytes`` occupies the link for nbytes x 8 / (gbps x 1e9) seconds (lab-03 task 2's wire
time at line rate) and its KV lands ``latency_ms`` after it leaves the link (the fixed part: the
decode side's request, the connector's handshake, the proxy's hop). A transfer that finds the link
busy waits for it: transfers sharing a link are serialised, first come first served.
Example: two 10 MB transfers ready at t=0 on a 10 Gb/s link with 1 ms latency land at 9 and 17 ms.
"""

from __future__ import annotations


class KVLink:
    def __init__(self, gbps: float | None, latency_ms: float = 0.0) -> None:
        if gbps is not None and gbps <= 0:
            raise ValueError(
                f"gbps: the link's rate must be > 0 Gb/s (or None for 'no wire time'), got {gbps}"
            )
        if latency_ms < 0:
            raise ValueError(f"latency_ms: must be >= 0, got {latency_ms}")
        self.gbps, self.latency_ms = gbps, latency_ms
        self.free_at_ms = 0.0
        self.busy_ms = 0.0

    def wire_ms(self, nbytes: float) -> float:
        return 0.0 if self.gbps is None else nbytes * 8 / (self.gbps * 1e9) * 1e3

    def send(self, ready_ms: float, nbytes: float) -> float:
        """Queue a transfer ready at ``ready_ms``; returns when its KV has landed (ms)."""
        start = max(ready_ms, self.free_at_ms)
        wire = self.wire_ms(nbytes)
        self.free_at_ms = start + wire
        self.busy_ms += wire
        return self.free_at_ms + self.latency_ms
