"""What the policy answers for one request: ``Relay`` an upstream's stream, or an ``ErrorReply``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from .upstream import UpstreamStream

if TYPE_CHECKING:
    from .upstream import ProxyContext

MODES = ("disaggregated", "fallback", "local")


@dataclass
class Relay:
    """Policy answer: relay ``stream`` to the client. ``mode``: "disaggregated" (prefill then decode),
    "fallback" (prefill failed or absent: decode alone) or "local" (decode alone by choice: a short
    prompt). ``reason``: why decode served alone (an UpstreamError kind, "short_prompt", "prefill_busy");
    None when disaggregated."""

    stream: UpstreamStream
    mode: str
    reason: str | None = None
    prefill_url: str | None = None


@dataclass
class ErrorReply:
    """Policy answer: reply with this status and JSON body (OpenAI style: {"error": {...}})."""

    status: int
    body: dict[str, Any]


class Policy(Protocol):
    async def handle(
        self, ctx: ProxyContext, path: str, body: dict, request_id: str
    ) -> Relay | ErrorReply: ...
