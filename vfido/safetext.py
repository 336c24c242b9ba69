"""Text that others control, made safe for a terminal: the one place vfido does it.

Relying-party IDs and names, user names and display names come from web pages and CTAP
hosts; a trace file or a log line repeats them. Printed raw, ``\\x1b[2J`` clears the screen,
``\\x1b]0;...\\x07`` sets the window title, ``\\x9b`` is a one-byte CSI on some terminals,
and a bidi override (U+202E) makes ``evil.com\\u202emoc.elgoog`` read as another site.
:func:`visible` shows every such character as an escape instead, so the user sees what
was sent and the terminal acts on none of it. Everything that prints such text goes
through it: the credential listings, ``vfido trace show``, the presence prompt (and the
notifications built from the same question), log lines (:class:`VisibleFormatter`), and
everything the `vfido` command prints, success lines and errors (:class:`VisibleStream`
around its stdout and stderr: a path or name the user typed is shown back escaped too).
"""

from __future__ import annotations

import logging
import unicodedata
from typing import Any, TextIO

#: Unicode categories shown as escapes: controls (C0, DEL, C1), format characters (bidi
#: embeddings, overrides and isolates, marks, zero-width characters, tags), surrogates (not
#: encodable: printing one would fail) and the line / paragraph separators.
_ESCAPED_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Zl", "Zp"})
#: Format characters kept: zero-width (non-)joiners, inside emoji and many scripts' names;
#: they neither move the cursor nor reorder text.
_KEPT = frozenset({"\u200c", "\u200d"})


def _escape(c: str) -> str:
    code = ord(c)
    if code <= 0xFF:
        return f"\\x{code:02x}"
    if code <= 0xFFFF:
        return f"\\u{code:04x}"
    return f"\\U{code:08x}"


def visible(text: str) -> str:
    """``text`` with every control, format and separator character written as a Python-style
    escape (``\\x1b``, ``\\u202e``), so that a terminal shows it and does not act on it."""
    if text.isprintable() and text.isascii():
        return text  # the common case: nothing to look at
    return "".join(
        _escape(c) if c not in _KEPT and unicodedata.category(c) in _ESCAPED_CATEGORIES else c
        for c in text
    )


def shorten(text: str, limit: int, *, keep_end: bool = False) -> str:
    """``text`` cut to ``limit`` characters, the cut shown with an ellipsis. ``keep_end``:
    cut the start instead (a domain name: its end says whose it is)."""
    if len(text) <= limit:
        return text
    return "\u2026" + text[1 - limit :] if keep_end else text[: limit - 1] + "\u2026"


def is_utf8(text: str) -> bool:
    """Whether ``text`` from outside (an argument, a variable, what was typed) was UTF-8:
    Python holds the bytes of any other encoding as surrogates, which no UTF-8 consumer (the
    KDF, CTAP, SQLite's paths, the control socket's JSON) can take."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def visible_lines(text: str) -> str:
    """``text`` through :func:`visible` line by line: its newlines are kept."""
    if text.isascii() and text.replace("\n", "").isprintable():
        return text
    return "\n".join(visible(line) for line in text.split("\n"))


class VisibleStream:
    """A text stream (``sys.stdout``, ``sys.stderr`` of the `vfido` command) whose writes
    show control characters as escapes, newlines kept: a path, name or ID that a command
    prints back, in a success line as in an error, never drives the terminal. Everything
    else is the wrapped stream's."""

    def __init__(self, inner: TextIO) -> None:
        self._inner = inner

    def write(self, text: str) -> int:
        self._inner.write(visible_lines(text))
        return len(text)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


class VisibleFormatter(logging.Formatter):
    """A log formatter whose message line shows control characters as escapes: a log
    message may quote what a host sent (an RP ID, an extension name) and must neither
    drive the terminal nor start a forged line of its own. Tracebacks keep their lines."""

    def formatMessage(self, record: logging.LogRecord) -> str:
        return visible(super().formatMessage(record))
