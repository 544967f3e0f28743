"""How hard a token is to guess: a conservative estimate, and strong tokens made for you.

Tokens an operator chooses (``--customer NAME=TOKEN``, ``customers:`` in the config file)
are checked at start: below ``MIN_BITS`` the collector refuses to start. The estimate is
length times log2 of the alphabet the characters are drawn from (lower case, upper case,
digits, anything else), where a run (``aaaa``, ``1234``, ``zyx``) or a repeat of something
earlier in the token (``abcabc``) counts as one character: ``1234`` and
``aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa`` are refused, ``secrets.token_urlsafe(32)`` passes
with room to spare. It cannot see dictionary words; use ``tripline tokens generate``.
"""

from __future__ import annotations

import math
import secrets
import string

__all__ = ["ENROLLMENT_PREFIX", "MIN_BITS", "WeakToken", "check", "estimate_bits", "generate"]

MIN_BITS = 128
ENROLLMENT_PREFIX = "tle_"
# Prefixes Tripline puts in front of the tokens it makes carry no secret.
_KNOWN_PREFIXES = ("tle_", "tla_")
# Runs and repeats of this many characters or more count as one.
_MIN_PATTERN = 3
# Nothing a person types is longer; bounds the quadratic repeat search too.
MAX_LENGTH = 512


class WeakToken(ValueError):
    """A token too easy to guess; the message gives the estimate, never the token."""

    def __init__(self, bits: float, minimum: int = MIN_BITS) -> None:
        super().__init__(
            f"the token has about {bits:.0f} bits of entropy, at least {minimum} are needed: "
            "make one with `tripline tokens generate`"
        )
        self.bits = bits
        self.minimum = minimum


def _alphabet(text: str) -> int:
    size = 0
    if any(ch in string.ascii_lowercase for ch in text):
        size += 26
    if any(ch in string.ascii_uppercase for ch in text):
        size += 26
    if any(ch in string.digits for ch in text):
        size += 10
    if any(not (ch.isascii() and ch.isalnum()) for ch in text):
        size += 33  # printable ASCII punctuation and space; more exotic ones count the same
    return size


def _run_length(text: str, start: int) -> int:
    """Length of the run at `start` whose characters step by -1, 0 or +1 (``aaa``, ``123``)."""
    if start + 1 >= len(text):
        return 1
    step = ord(text[start + 1]) - ord(text[start])
    if step not in (-1, 0, 1):
        return 1
    end = start + 1
    while end + 1 < len(text) and ord(text[end + 1]) - ord(text[end]) == step:
        end += 1
    return end - start + 1


def _repeat_length(text: str, start: int) -> int:
    """Longest prefix of text[start:] that also starts somewhere before `start`."""
    best = 0
    for earlier in range(start):
        length = 0
        while start + length < len(text) and text[earlier + length] == text[start + length]:
            length += 1
        best = max(best, length)
    return best


def estimate_bits(token: str) -> float:
    """Estimated entropy of `token` in bits (see the module docstring)."""
    body = token
    for prefix in _KNOWN_PREFIXES:
        if body.startswith(prefix):
            body = body[len(prefix) :]
            break
    if not body:
        return 0.0
    units = 0
    at = 0
    while at < len(body):
        pattern = max(_run_length(body, at), _repeat_length(body, at))
        at += pattern if pattern >= _MIN_PATTERN else 1
        units += 1
    return units * math.log2(_alphabet(body))


def check(token: str, minimum: int = MIN_BITS) -> None:
    """Raise WeakToken when `token` is estimated below `minimum` bits, or too long to be one."""
    if len(token) > MAX_LENGTH:
        raise ValueError(f"the token is longer than {MAX_LENGTH} characters")
    bits = estimate_bits(token)
    if bits < minimum:
        raise WeakToken(bits, minimum)


def generate(prefix: str = ENROLLMENT_PREFIX) -> str:
    """A new token of 256 random bits (URL-safe), with Tripline's prefix."""
    return prefix + secrets.token_urlsafe(32)
