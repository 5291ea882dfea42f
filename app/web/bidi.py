"""Bidirectional text controls in user text, closed where the text ends.

An unclosed RIGHT-TO-LEFT OVERRIDE (U+202E) in a project name or a prompt would reverse the
page's own text after it, up to the end of the line ("Trojan Source"). Every value a template
prints goes through `close_bidi` (the Jinja environment's `finalize`), so the embeddings,
overrides and isolates a value opens are closed at its end and cannot reach the page around
it. Text without such controls, nearly all of it, is returned as it is.
"""

from __future__ import annotations

import re

from markupsafe import Markup

_EMBEDDINGS = "\u202a\u202b\u202d\u202e"  # LRE, RLE, LRO, RLO: closed by PDF
_ISOLATES = "\u2066\u2067\u2068"  # LRI, RLI, FSI: closed by PDI
_PDF, _PDI = "\u202c", "\u2069"
_CONTROLS = re.compile(f"[{_EMBEDDINGS}{_ISOLATES}{_PDF}{_PDI}]")


def close_bidi(text: str) -> str:
    """``text`` with the bidi controls it leaves open closed at its end (UAX #9: a PDF closes
    the last embedding opened inside the current isolate; a PDI closes its isolate and every
    embedding opened within it)."""
    if _CONTROLS.search(text) is None:
        return text
    stack: list[str] = []
    for match in _CONTROLS.finditer(text):
        char = match.group()
        if char in _EMBEDDINGS:
            stack.append(_PDF)
        elif char in _ISOLATES:
            stack.append(_PDI)
        elif char == _PDF:
            if stack and stack[-1] == _PDF:
                stack.pop()
        elif _PDI in stack:
            while stack.pop() != _PDI:
                pass
    if not stack:
        return text
    closed = text + "".join(reversed(stack))
    return Markup(closed) if isinstance(text, Markup) else closed  # noqa: S704 - adds no markup


def finalize(value: object) -> object:
    """Jinja's ``finalize``: every printed string with its bidi controls closed."""
    return close_bidi(value) if isinstance(value, str) else value
