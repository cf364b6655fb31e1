"""Client-side tools: an OpenAI SSE client that timestamps every token, and Prometheus text parsing."""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import aiohttp


@dataclass
class StreamResult:
    status: int
    headers: Mapping[str, str]  # case-insensitive (CIMultiDict)
    sent_at: float  # time.monotonic() just before the request left
    arrivals: list[float] = field(default_factory=list)  # time.monotonic() of each token-bearing event
    texts: list[str] = field(default_factory=list)  # each event's text (choices[0].text / delta.content)
    events: list[dict[str, Any]] = field(default_factory=list)  # every parsed `data:` JSON event
    done: bool = False  # the stream ended with `data: [DONE]`
    error: dict[str, Any] | None = None  # an `{"error": ...}` event, or the JSON error body
    body: Any = None  # a non-SSE answer's parsed JSON
    malformed: list[bytes] = field(default_factory=list)  # `data:` payloads that were not JSON (torn events)

    @property
    def text(self) -> str:
        return "".join(self.texts)


def event_text(event: dict[str, Any]) -> str | None:
    """The token text an OpenAI completion / chat chunk carries (None if it carries none)."""
    choices = event.get("choices") or []
    if not choices:
        return None
    c = choices[0]
    if "text" in c:
        return c["text"]
    delta = c.get("delta") or {}
    return delta.get("content")


async def stream_request(
    session: aiohttp.ClientSession,
    url: str,
    path: str,
    body: dict[str, Any],
    headers: dict[str, str] | None = None,
    timeout_s: float = 30.0,
    stop_after: int | None = None,
) -> StreamResult:
    """POST and read the answer; SSE events are timestamped as they arrive.

    An event whose ``data:`` is not a JSON object is kept in ``malformed`` (never raised), so a test can
    assert that a stream's framing stayed whole. ``stop_after``: disconnect after that many token events (a client that goes away mid-stream).
    """
    sent = time.monotonic()
    timeout = aiohttp.ClientTimeout(total=timeout_s)
    async with session.post(url + path, json=body, headers=headers, timeout=timeout) as resp:
        res = StreamResult(resp.status, resp.headers.copy(), sent)
        if resp.content_type != "text/event-stream":  # aiohttp parses the header (any letter case)
            raw = await resp.read()
            try:
                res.body = json.loads(raw)
            except ValueError:
                res.body = raw.decode(errors="replace")
            if isinstance(res.body, dict) and "error" in res.body:
                res.error = res.body["error"]
            return res
        buf = b""
        async for chunk in resp.content.iter_any():
            now = time.monotonic()
            buf += chunk
            while b"\n\n" in buf:
                raw_event, buf = buf.split(b"\n\n", 1)
                for line in raw_event.split(b"\n"):
                    if not line.startswith(b"data:"):
                        continue
                    data = line[5:].strip()
                    if data == b"[DONE]":
                        res.done = True
                        continue
                    try:
                        event = json.loads(data)
                    except ValueError:  # a torn event: kept for the caller to see, never fatal
                        res.malformed.append(data)
                        continue
                    if not isinstance(event, dict):
                        res.malformed.append(data)
                        continue
                    res.events.append(event)
                    if "error" in event:
                        res.error = event["error"]
                        continue
                    text = event_text(event)
                    if text is not None:
                        res.texts.append(text)
                        res.arrivals.append(now)
            if stop_after is not None and len(res.texts) >= stop_after:
                resp.close()  # go away mid-stream
                return res
    return res


async def get_text(session: aiohttp.ClientSession, url: str, timeout_s: float = 5.0) -> str:
    async with session.get(url, timeout=aiohttp.ClientTimeout(total=timeout_s)) as resp:
        resp.raise_for_status()
        return await resp.text()


_SAMPLE = re.compile(r"^(?P<name>[a-zA-Z_:][\w:]*)(?:\{(?P<labels>.*)\})?\s+(?P<value>\S+)$")
_LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')
# The text format escapes three characters in a label value: \\ \" and \n (one left-to-right pass, so
# an escaped backslash followed by n stays a backslash and an n); any other backslash is kept as it is.
_ESCAPE = re.compile(r'\\[\\"n]')
_UNESCAPED = {"\\\\": "\\", '\\"': '"', "\\n": "\n"}


def _unescape(value: str) -> str:
    return _ESCAPE.sub(lambda m: _UNESCAPED[m[0]], value)


def parse_metrics(text: str) -> list[tuple[str, dict[str, str], float]]:
    """Prometheus text format -> [(name, labels, value)] (comments skipped)."""
    out = []
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = _SAMPLE.match(line)
        if not m:
            raise ValueError(f"not a Prometheus sample line: {line!r}")
        labels = {k: _unescape(v) for k, v in _LABEL.findall(m["labels"] or "")}
        out.append((m["name"], labels, float(m["value"])))
    return out


def metric_sum(text: str, name: str, **labels: str) -> float:
    """Sum of the samples of ``name`` whose labels include ``labels`` (0 when there are none)."""
    return sum(v for n, lab, v in parse_metrics(text) if n == name and labels.items() <= lab.items())


async def wait_for(predicate, timeout_s: float, interval_s: float = 0.01) -> bool:
    """Poll ``predicate()`` until true or the deadline; returns its last value."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        await asyncio.sleep(interval_s)
    return bool(predicate())
