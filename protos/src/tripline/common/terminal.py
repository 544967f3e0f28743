"""Text that reaches an operator's terminal or a text log: control characters escaped.

Hostnames, summaries, labels, process names and command lines come from agents, and
an agent is untrusted. Printed raw, a newline forges a table row or a log line, an ESC
or a C1 CSI recolours or clears the screen, an OSC 52 sequence writes the operator's
clipboard, and a bidi override makes text read differently from what it is.
:func:`escape` is the one function every printing path uses: CLI tables, ``tickets
show``, and the text log formatter.
"""

from __future__ import annotations

_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}
# C0 controls, DEL, C1 controls (U+0080..U+009F: 8-bit CSI/OSC on some terminals),
# bidi embeddings/overrides/isolates, line and paragraph separators, BOM.
_UNSAFE = [
    *range(0x00, 0x20),
    0x7F,
    *range(0x80, 0xA0),
    *range(0x202A, 0x202F),
    *range(0x2066, 0x206A),
    0x2028,
    0x2029,
    0x061C,
    0x200E,
    0x200F,
    0xFEFF,
]
_TABLE = {
    code: _NAMED.get(chr(code), f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}")
    for code in _UNSAFE
}
# The same characters as JSON escapes: json.dumps(ensure_ascii=False) leaves C1,
# bidi and separator characters raw, which a terminal tailing the log interprets.
_JSON_TABLE = {code: f"\\u{code:04x}" for code in _UNSAFE if code >= 0x7F}


def escape(value: object) -> str:
    """``str(value)`` with every control, bidi and separator character written as an
    escape (``\\n``, ``\\x1b``, ``\\u202e``): one line, nothing a terminal acts on."""
    return str(value).translate(_TABLE)


def escape_json_text(text: str) -> str:
    """A JSON document with the characters JSON leaves raw escaped as ``\\uXXXX``;
    valid JSON still, and the same value when parsed."""
    return text.translate(_JSON_TABLE)


def cell(value: object, width: int, cut: bool = False) -> str:
    """A table cell: escaped, padded to ``width``, and cut to it when ``cut``."""
    text = escape(value)
    return (text[:width] if cut else text).ljust(width)
