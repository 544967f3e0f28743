"""What a command raises for a problem the user can fix, and the exit code it maps to."""

from __future__ import annotations

EXIT_USAGE = 2


class CliError(Exception):
    """A problem the user can fix; printed without a traceback."""


def one_line(error: BaseException) -> str:
    """The error's text on one line: a log or a terminal reads it whole."""
    return " ".join(str(error).split())
