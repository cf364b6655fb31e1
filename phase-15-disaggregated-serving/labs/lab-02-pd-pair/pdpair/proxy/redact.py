"""Credentials in upstream URLs never leave the proxy.

An upstream may be given as ``http://user:secret@host:port`` (aiohttp then sends HTTP basic auth). The
proxy shows upstream URLs in a response header, ``/health``, error bodies and ``/metrics`` labels, none
of which need authentication, so every URL it shows goes through ``redact_url`` and every JSON body it
builds from the policy's answer through ``scrub``: the user-info part becomes ``***``.
"""

from __future__ import annotations

import re
from typing import Any

_USERINFO = re.compile(r"(?<=://)[^/@\s]*@")
MAX_SCRUB_DEPTH = 64


def redact_url(text: str) -> str:
    """``text`` with the credentials of every URL in it replaced by ``***``.

    Example: ``redact_url("http://u:pw@10.0.0.2:8200")`` is ``"http://***@10.0.0.2:8200"``; a URL
    without credentials comes back unchanged.
    """
    return _USERINFO.sub("***@", text) if "@" in text else text


def scrub(value: Any, _depth: int = 0) -> Any:
    """A copy of a JSON-like value with every string passed through ``redact_url`` (keys too).

    Containers nested deeper than ``MAX_SCRUB_DEPTH`` are replaced by ``"<too deep>"``.
    """
    if isinstance(value, str):
        return redact_url(value)
    if isinstance(value, dict | list | tuple) and _depth >= MAX_SCRUB_DEPTH:
        return "<too deep>"
    if isinstance(value, dict):
        return {scrub(k, _depth + 1): scrub(v, _depth + 1) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [scrub(v, _depth + 1) for v in value]
    return value
