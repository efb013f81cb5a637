"""Text helpers for showing what agents print: terminal escape codes removed."""

from __future__ import annotations

import re

# CSI sequences (colours, cursor moves), OSC sequences (titles, hyperlinks), lone escapes.
_ANSI_RE = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)|\x1b[@-_]")
# Other control characters a terminal would swallow; keep tab and newline.
_CONTROL_RE = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


def strip_ansi(text: str) -> str:
    """``text`` without ANSI escape codes and stray control characters (``\\r`` too)."""
    return _CONTROL_RE.sub("", _ANSI_RE.sub("", text.replace("\r\n", "\n")))
