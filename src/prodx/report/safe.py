"""Text from the host made safe for a terminal: a log line or a file name may carry escape
sequences (a colour, a title, a cursor move, a terminal's query) that a report must show,
never send."""

from __future__ import annotations

import re
from typing import Any

_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def printable(text: Any) -> str:
    """``text`` with every control character but tab and newline written as ``\\xNN``.

    >>> printable("disk \\x1b[31mfull\\x1b[0m\\x07")
    'disk \\\\x1b[31mfull\\\\x1b[0m\\\\x07'
    """
    return _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", str(text))


def escape(text: Any) -> str:
    """``text`` for Rich markup: control characters shown (``printable``), brackets escaped."""
    from rich.markup import escape as markup_escape

    return markup_escape(printable(text))
