"""Log lines stay one line each and carry no terminal control sequence."""

from __future__ import annotations

import io
import json
import logging

import pytest

from tripline.common import logs
from tripline.common.terminal import cell, escape

FORGED = "pc-01\n12:00:00 ERROR   collector.server: forged line"
OSC52 = "\x1b]52;c;cm0gLXJmIH4K\x07"


@pytest.mark.parametrize(
    ("raw", "shown"),
    [
        ("plain ascii", "plain ascii"),
        ("Müller-PC ÄÖÜ 日本", "Müller-PC ÄÖÜ 日本"),  # printable text stays as it is
        ("a\nb\rc\td", "a\\nb\\rc\\td"),
        ("\x00\x1b[31m\x7f", "\\x00\\x1b[31m\\x7f"),
        (OSC52, "\\x1b]52;c;cm0gLXJmIH4K\\x07"),
        ("\x85\x9b31m\x9d", "\\x85\\x9b31m\\x9d"),  # C1: NEL, CSI, OSC
        ("\u202eexe.txt\u2066\u2069", "\\u202eexe.txt\\u2066\\u2069"),
        ("a\u2028b\u2029c", "a\\u2028b\\u2029c"),
        (42, "42"),
        (None, "None"),
    ],
)
def test_escape(raw: object, shown: str) -> None:
    assert escape(raw) == shown


def test_cell_pads_and_cuts_after_escaping() -> None:
    assert cell("a\nb", 6) == "a\\nb  "
    assert cell("\x1b" * 5, 6, cut=True) == "\\x1b\\x"


def capture(fmt: str) -> tuple[logging.Logger, io.StringIO]:
    stream = io.StringIO()
    logs.configure(fmt, "INFO", stream)
    return logging.getLogger("tripline.test"), stream


@pytest.fixture(autouse=True)
def _restore_logging() -> object:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield None
    root.handlers[:] = handlers
    root.setLevel(level)


def test_text_log_escapes_forged_lines_in_values_and_messages() -> None:
    log, stream = capture("text")
    log.warning("hello from %s", FORGED, extra={"hostname": FORGED, "summary": OSC52})
    out = stream.getvalue()
    assert out.count("\n") == 1  # one record, one line
    assert "\x1b" not in out and "\x07" not in out
    assert "hostname=pc-01\\n12:00:00 ERROR" in out
    assert "summary=\\x1b]52;c;" in out
    assert "hello from pc-01\\n12:00:00" in out


def test_text_log_traceback_lines_cannot_pass_for_log_lines() -> None:
    log, stream = capture("text")
    try:
        raise ValueError(f"bad\n{FORGED.splitlines()[1]}{OSC52}")
    except ValueError:
        log.exception("failed")
    lines = stream.getvalue().splitlines()
    assert "failed" in lines[0]
    assert all(line.startswith("    ") for line in lines[1:])
    assert "\x1b" not in stream.getvalue()


def test_json_log_escapes_c1_and_bidi_and_stays_valid_json() -> None:
    log, stream = capture("json")
    value = f"{FORGED}\x9b31m\u202e{OSC52}ü"
    log.warning("m", extra={"hostname": value})
    line = stream.getvalue()
    assert line.count("\n") == 1
    for char in ("\x1b", "\x07", "\x9b", "\u202e"):
        assert char not in line
    assert "ü" in line  # readable text is not turned into escapes
    assert json.loads(line)["hostname"] == value
