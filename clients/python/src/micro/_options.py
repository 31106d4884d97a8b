"""Where the proxy is, and the durations of micro's options (``MICRO_*`` variables)."""

from __future__ import annotations

import os
import re

#: Where clients send their calls when neither an address nor ``MICRO_PROXY`` is given.
DEFAULT_PROXY = "localhost:8081"

_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h)")


def proxy_address(address: str | None = None) -> str:
    """The proxy to use: ``address`` if given, else ``MICRO_PROXY``, else localhost:8081.
    A bare ``:8081`` means localhost."""
    address = address or os.environ.get("MICRO_PROXY") or DEFAULT_PROXY
    address = address.removeprefix("http://")
    return f"localhost{address}" if address.startswith(":") else address


def parse_duration(text: str) -> float:
    """Seconds in a micro duration: plain seconds (``30``, ``1.5``) or units, which
    may be chained (``500ms``, ``2s``, ``1m30s``). Raises ValueError otherwise."""
    text = text.strip()
    try:
        seconds = float(text)
    except ValueError:
        pos, seconds = 0, 0.0
        for m in _PART.finditer(text):
            if m.start() != pos:
                break
            seconds += float(m.group(1)) * _UNITS[m.group(2)]
            pos = m.end()
        if pos != len(text) or not text:
            raise ValueError(f"expected seconds (30) or a duration such as 500ms, 2s or 1m, got {text!r}") from None
    if seconds < 0 or seconds != seconds:  # negative or NaN
        raise ValueError(f"a duration cannot be {text!r}")
    return seconds


def env_duration(name: str, default: float) -> float:
    """The duration in the environment variable ``name``, else ``default``."""
    text = os.environ.get(name)
    if not text:
        return default
    try:
        return parse_duration(text)
    except ValueError as e:
        raise ValueError(f"{name}={text!r}: {e}") from None
