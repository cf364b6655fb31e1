"""The proxy's settings: upstream timeouts and the limits that keep a hostile client from hurting it.

Every limit has a default sized for a real P/D deployment on one machine and a CLI flag
(``python -m pdpair.proxy --help``). What each one bounds:

- ``max_body_bytes`` (8 MiB): a client body. Sized for token-id prompts: a token id is written as at
  most 6 digits plus ``", "`` (8 bytes), so 8 MiB carries a ~1M-token prompt; a 150k-token prompt is
  ~1.04 MiB. ``body_limit_for(max_model_len)`` gives the same rule for one model. Larger -> 413.
- ``max_json_depth`` (64): nesting of the client's JSON (chat messages with content parts and a tool's
  JSON schema stay far below). Deeper -> 400 before the policy sees it, so no copy of it is attempted.
- ``header_timeout_s`` (10 s): a new connection must deliver a complete request line and headers
  within it; ``idle_timeout_s`` (30 s): a kept-alive connection with no new request is closed after it.
- ``body_timeout_s`` (30 s): from the headers to the last byte of the body. Slower -> 408, closed.
- ``client_stall_timeout_s`` (10 s): the longest the proxy waits for a client to accept more of its
  answer (a client that stops reading); then the stream and its upstream are closed.
- ``max_connections`` (512): client connections; a new one beyond it evicts the longest-idle
  connection, or is closed at once when every connection is serving a request.
- ``max_upstream_body_bytes`` (16 MiB): an upstream's non-streamed answer (a prefill answer, a JSON
  completion) and any single SSE event. Larger -> the upstream call fails with ``bad_response``.
- ``max_policy_errors_kept`` (8): exceptions kept for ``raise_policy_error``; only the first keeps
  its traceback, later ones are kept without it, and beyond the cap they are only counted.
"""

from __future__ import annotations

from dataclasses import dataclass

MiB = 1024 * 1024
BYTES_PER_TOKEN_ID = 8  # "123456, ": up to 6 digits (vocabularies < 1M) and a separator
BODY_OVERHEAD_BYTES = 64 * 1024  # sampling parameters, chat framing


def body_limit_for(max_model_len: int) -> int:
    """The client body limit (bytes) that admits a token-id prompt of ``max_model_len`` tokens.

    Example: ``body_limit_for(150_000)`` is 1,265,536 bytes (~1.2 MiB). ValueError if not positive.
    """
    if not isinstance(max_model_len, int) or max_model_len <= 0:
        raise ValueError(f"max_model_len must be a positive integer, got {max_model_len!r}")
    return max_model_len * BYTES_PER_TOKEN_ID + BODY_OVERHEAD_BYTES


@dataclass
class ProxyConfig:
    host: str = "127.0.0.1"
    port: int = 0  # 0 = a free port
    connect_timeout_s: float = 2.0  # TCP connect, both sides
    prefill_timeout_s: float = 30.0  # the whole prefill call
    decode_timeout_s: float = 60.0  # until decode's headers, and the longest silence between chunks
    max_error_body_bytes: int = 64 * 1024  # an upstream's error body kept for the policy
    max_body_bytes: int = 8 * MiB
    max_json_depth: int = 64
    header_timeout_s: float = 10.0
    idle_timeout_s: float = 30.0
    body_timeout_s: float = 30.0
    client_stall_timeout_s: float = 10.0
    max_connections: int = 512
    max_upstream_body_bytes: int = 16 * MiB
    max_policy_errors_kept: int = 8

    def __post_init__(self) -> None:
        for name in ("connect_timeout_s", "prefill_timeout_s", "decode_timeout_s", "header_timeout_s",
                     "idle_timeout_s", "body_timeout_s", "client_stall_timeout_s"):  # fmt: skip
            value = getattr(self, name)
            if not isinstance(value, int | float) or isinstance(value, bool) or not value > 0:
                raise ValueError(f"ProxyConfig.{name} must be a positive number of seconds, got {value!r}")
        for name in ("max_error_body_bytes", "max_body_bytes", "max_json_depth", "max_connections",
                     "max_upstream_body_bytes", "max_policy_errors_kept"):  # fmt: skip
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"ProxyConfig.{name} must be a positive integer, got {value!r}")
        if not isinstance(self.port, int) or not 0 <= self.port <= 65535:
            raise ValueError(f"ProxyConfig.port must be 0..65535, got {self.port!r}")
