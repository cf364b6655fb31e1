"""The P/D proxy's plumbing (given): an aiohttp server that hands each request to the student's policy.

The student's ``PDProxyPolicy`` (solution.py, task 4) makes the decisions: which upstream, the handoff
flow, and what to do when a side fails. This package does everything else, one concern per module:

- ``server``: the OpenAI-compatible routes ``POST /v1/completions`` and ``POST /v1/chat/completions``
  (a body that is too large, too slow, badly encoded, not a JSON object or nested too deep is refused
  with a 4xx before the policy sees it), ``GET /health``, ``GET /metrics``; per-connection header, body
  and idle timeouts and a connection limit; ``ProxyServer`` (in-process) and ``ProxyThread``;
- ``upstream``: one ``ProxyContext`` per request with the upstream calls, each with a timeout and a
  size bound (``post_json`` for the prefill hop, ``open_stream`` for the decode hop), which raise
  ``UpstreamError``;
- ``relay``: what the policy returns is relayed: an SSE stream event by event as it arrives (framing
  kept whole on every error path, a cut stream ends with an ``error`` event and never a fake
  ``[DONE]``), a JSON answer read whole then forwarded; ``X-Request-Id`` (the client's own, echoed),
  ``X-PD-Upstream-Request-Id`` (the unique id both hops carried: ``upstream_request_id``), ``X-PD-Mode``
  ``X-PD-Fallback-Reason`` and ``X-PD-Local-Reason`` headers tell the client what happened (an ``error``
  event inside a 200 stream is counted as an upstream error), and ``Server-Timing`` how long each
  hop took (``prefill;dur=`` the whole prefill call, ``decode;dur=`` until decode's headers, in ms);
  a client that disconnects or stops reading cancels the upstream request (its connection is closed);
- ``metrics``: requests, responses by status, handoffs, fallbacks by reason, upstream errors by role,
  upstream and kind, client disconnects and timeouts, policy errors; requests = responses + in flight;
- ``redact``: credentials in upstream URLs never appear in a header, body or metric;
- ``config``: ``ProxyConfig``, every timeout and limit with its default and what it is sized for;
- ``cli``: ``python -m pdpair.proxy --prefill URL --decode URL --port N``.

Policy errors: an unexpected exception from the policy is answered with a 500 AND recorded (bounded);
tests call ``raise_policy_error()`` (``ProxyServer`` and ``ProxyThread`` do it on exit) so the student's
own exception, with its traceback, surfaces in the test instead of a bare 500.
"""

from .cli import LAB_DIR, load_impl, main
from .config import ProxyConfig, body_limit_for
from .metrics import METRIC_HELP, Metrics
from .redact import redact_url, scrub
from .replies import MODES, ErrorReply, Policy, Relay
from .server import ROUTES, ProxyServer, ProxyThread, json_depth_exceeds, parse_body, upstream_request_id
from .upstream import ProxyContext, UpstreamError, UpstreamStream, is_event_stream

SSE = "text/event-stream"

__all__ = [
    "LAB_DIR", "METRIC_HELP", "MODES", "ROUTES", "SSE", "ErrorReply", "Metrics", "Policy", "ProxyConfig",
    "ProxyContext", "ProxyServer", "ProxyThread", "Relay", "UpstreamError", "UpstreamStream",
    "body_limit_for", "is_event_stream", "json_depth_exceeds", "load_impl", "main", "parse_body",
    "redact_url", "scrub", "upstream_request_id",
]  # fmt: skip
