"""The proxy's counters, rendered in Prometheus text exposition format (version 0.0.4).

Accounting rule (what makes ``/metrics`` consistent at every instant): a request to a completion route
is counted in ``pdproxy_requests_total`` and ``pdproxy_inflight_requests`` when its handler starts, and
leaves the in-flight gauge for exactly one ``pdproxy_responses_total`` sample when its handler ends. So
``requests == responses + in flight`` always holds, whatever happened: a 413 or a 408 while reading the
body, a bare 500, a streamed answer that ended with an error event (its status is the 200 already
sent), or a client that went away before any answer (status ``499``, nginx's "client closed request").
"""

from __future__ import annotations

from collections import defaultdict

METRIC_HELP = {
    "pdproxy_requests_total": ("counter", "Client requests received, by endpoint."),
    "pdproxy_responses_total": (
        "counter",
        "Requests finished, by HTTP status sent (499: the client left before any answer).",
    ),
    "pdproxy_handoffs_total": ("counter", "Requests served disaggregated (prefill then decode)."),
    "pdproxy_fallbacks_total": (
        "counter",
        "Requests sent to decode alone (decode prefilled locally), by reason.",
    ),
    "pdproxy_local_prefills_total": (
        "counter",
        "Requests sent to decode alone by choice, by reason (short_prompt, prefill_busy).",
    ),
    "pdproxy_upstream_errors_total": (
        "counter",
        "Failed upstream calls, by role, upstream and kind (error_event: an error inside a 200 stream).",
    ),
    "pdproxy_client_disconnects_total": ("counter", "Clients that went away before their answer ended."),
    "pdproxy_client_timeouts_total": (
        "counter",
        "Client connections closed for being too slow, by phase (header, idle, body, write).",
    ),
    "pdproxy_connections_refused_total": (
        "counter",
        "Connections closed at the connection limit (idle ones evicted first).",
    ),
    "pdproxy_policy_errors_total": ("counter", "Unexpected exceptions raised by the proxy policy."),
    "pdproxy_internal_errors_total": ("counter", "Unexpected exceptions outside the policy (a 500)."),
    "pdproxy_inflight_requests": ("gauge", "Requests being served now."),
    "pdproxy_open_connections": ("gauge", "Client connections open now."),
}
ALWAYS_SHOWN = ("pdproxy_handoffs_total", "pdproxy_client_disconnects_total", "pdproxy_policy_errors_total",
                "pdproxy_inflight_requests", "pdproxy_open_connections")  # fmt: skip


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


class Metrics:
    """Named counters and gauges with labels. ``inc`` an unknown name raises KeyError.

    Example: ``m.inc("pdproxy_fallbacks_total", reason="timeout")`` then
    ``m.value("pdproxy_fallbacks_total") == 1.0``.
    """

    def __init__(self) -> None:
        self._values: dict[tuple[str, tuple[tuple[str, str], ...]], float] = defaultdict(float)

    def inc(self, name: str, value: float = 1.0, **labels: str) -> None:
        if name not in METRIC_HELP:
            raise KeyError(f"unknown metric {name}")
        key = tuple(sorted((k, str(v)) for k, v in labels.items())) if labels else ()  # most have none
        self._values[(name, key)] += value

    def value(self, name: str, **labels: str) -> float:
        """Sum over every sample of ``name`` whose labels include ``labels``."""
        want = {k: str(v) for k, v in labels.items()}
        return sum(
            v for (n, lab), v in self._values.items() if n == name and want.items() <= dict(lab).items()
        )

    def render(self) -> str:
        lines = []
        for name, (kind, help_text) in METRIC_HELP.items():
            lines += [f"# HELP {name} {help_text}", f"# TYPE {name} {kind}"]
            samples = sorted((lab, v) for (n, lab), v in self._values.items() if n == name)
            if not samples and name in ALWAYS_SHOWN:
                samples = [((), 0.0)]
            for lab, v in samples:
                labels = ",".join(f'{k}="{_escape(val)}"' for k, val in lab)
                lines.append(f"{name}{{{labels}}} {v:g}" if labels else f"{name} {v:g}")
        return "\n".join(lines) + "\n"
