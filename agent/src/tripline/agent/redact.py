"""Redacts secrets from process command lines before they leave the PC.

A command line travels into ticket context, webhook payloads, the collector's store and
the agent's own spool, so it is redacted in the probe, before anything is spooled. What
is replaced by ``***``:

- exact values the agent knows are secret: its enrollment token and its credential;
- the value of a flag whose name looks secret (``--password X``, ``--password=X``,
  ``-token X``, ``/password:X``), and of ``KEY=VALUE`` pairs whose key does
  (``PASSWORD=x``, ``db_password=x``, ``?api_key=x&``, ``-Dssl.keyStorePassword=x``);
  a name looks secret when it contains password, passwd, passphrase, pwd, secret,
  token, key, auth or credential, or is ``pass``/``pw`` (see :func:`secret_name`);
- the TOKEN of ``--customer NAME=TOKEN`` (the collector's own flag);
- the password of a URL (``https://user:pass@host`` -> ``https://user:***@host``), the
  credentials after ``Bearer``/``Basic``, and ``Authorization: ...`` style headers;
- ``-pSECRET`` of the MySQL/MariaDB clients, ``-p SECRET`` of sshpass, ``-a SECRET`` of
  redis-cli and the password of curl's ``-u USER:PASSWORD`` (elsewhere these short flags
  mean other things, ``-p`` usually a port, and are left alone);
- every match of the operator's extra regular expressions (``redact_patterns``).

Words inside one argument are redacted too (``sh -c "mysql --password x"``, rewritten
process titles). The rules lean towards hiding too much: ``--keyboard X`` loses its X.
Every scan is linear in the command line's length, so a hostile process cannot stall the
probe with a crafted command line (the operator's own patterns excepted).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

REDACTED = "***"

# Exact secrets shorter than this are not searched for: replacing every "ab" would
# garble the line and a value that short protects nothing anyway.
MIN_SECRET_CHARS = 6

_SECRET_SUBSTRINGS = (
    "password",
    "passwd",
    "passphrase",
    "pwd",
    "secret",
    "token",
    "key",
    "auth",
    "credential",
)
_SECRET_PARTS = frozenset({"pass", "pw"})
# Flags whose value is NAME=SECRET rather than a secret of its own.
_PAIR_FLAGS = frozenset({"customer"})
_MYSQL_CLIENTS = frozenset(
    {"mysql", "mysqldump", "mysqladmin", "mysqlimport", "mysqlcheck", "mariadb", "mariadb-dump"}
)
# Short flags that carry a secret for one program only, and how its value is shown.
_PROGRAM_FLAGS = {
    "sshpass": {"-p": "secret"},
    "redis-cli": {"-a": "secret"},
    "curl": {"-u": "userpass", "--user": "userpass", "-U": "userpass", "--proxy-user": "userpass"},
}

_LONG_FLAG = re.compile(r"--[A-Za-z][\w.\-]*")
# A flag alone (two-argument form): -x, --name, /name on its own is a path, so no slash.
_FLAG_ALONE = re.compile(r"(['\"]?)(-{1,2})([A-Za-z][\w.\-]*)")
# KEY=VALUE, -KEY=VALUE, --KEY=VALUE, /KEY:VALUE, /KEY=VALUE (an optional opening quote)
_ASSIGNMENT = re.compile(r"(['\"]?(?:-{1,2}|/)?)([A-Za-z_][\w.\-]*)([=:])(.*)", re.DOTALL)
# Anchored at the start of a run, so each run of name characters is scanned once.
_INLINE_PAIR = re.compile(r"(?<![\w.\-])([A-Za-z_][\w.\-]*)=([^\s&;'\"]*)")
# "Name: value" with a space, as in an HTTP header; without the space it is a URL or a path.
_HEADER = re.compile(
    r"(?<![\w\-])([A-Za-z][\w\-]*):[ \t]+(?:(?:Bearer|Basic|Token|Digest)[ \t]+)?(\S+)", re.I
)
_SCHEME_CREDENTIALS = re.compile(r"(?<![\w\-])(Bearer|Basic)([ \t]+)[\w.~+/=\-]+", re.I)
_URL_PASSWORD = re.compile(r"(?<![\w+.\-])([A-Za-z][\w+.\-]*://[^\s/@:]*):([^\s/]*)@")
_WHITESPACE = re.compile(r"(\s+)")


def secret_name(name: str) -> bool:
    """Whether a flag or key name looks like it holds a secret."""
    lowered = name.lower()
    if any(word in lowered for word in _SECRET_SUBSTRINGS):
        return True
    return any(part in _SECRET_PARTS for part in re.split(r"[^a-z0-9]+", lowered))


@dataclass(frozen=True)
class Redaction:
    """What to redact besides the built-in rules; callable on an argv."""

    secrets: tuple[str, ...] = ()
    patterns: tuple[re.Pattern[str], ...] = ()

    def with_secrets(self, *values: str | None) -> Redaction:
        """A copy that also redacts these exact values (empty and None ignored)."""
        extra = tuple(v for v in values if v and v not in self.secrets)
        return Redaction(self.secrets + extra, self.patterns)

    def __call__(self, argv: Sequence[str]) -> str:
        return redact_argv(argv, secrets=self.secrets, patterns=self.patterns)


def compile_patterns(patterns: Iterable[str]) -> tuple[re.Pattern[str], ...]:
    """Compile the operator's ``redact_patterns``; raises re.error naming the bad one."""
    return tuple(re.compile(p) for p in patterns)


def redact_argv(
    argv: Sequence[str],
    *,
    secrets: Iterable[str] = (),
    patterns: Sequence[re.Pattern[str]] = (),
) -> str:
    """The command line ``argv`` joined by spaces, with every secret replaced by ``***``."""
    known = sorted((s for s in secrets if len(s) >= MIN_SECRET_CHARS), key=len, reverse=True)
    args = [_replace_known(arg, known) for arg in argv]
    program = _program(args[0]) if args else ""
    args = _redact_words(args, program)
    args = [_redact_inner_words(arg) for arg in args]
    text = " ".join(args).strip()
    text = _redact_inline(text)
    text = _replace_known(text, known)  # a secret split across two arguments
    for pattern in patterns:
        text = pattern.sub(REDACTED, text)
    return text


def _replace_known(text: str, known: Sequence[str]) -> str:
    for secret in known:
        if secret in text:
            text = text.replace(secret, REDACTED)
    return text


def _program(arg0: str) -> str:
    name = re.split(r"[\\/]", arg0)[-1].lower()
    return name[:-4] if name.endswith(".exe") else name


def _redact_words(words: list[str], program: str) -> list[str]:
    """Argument-level rules over one list of words (an argv, or the words of one arg)."""
    out: list[str] = []
    pending: str | None = None  # the name of a secret flag whose value comes next
    for word in words:
        if pending is not None and not _LONG_FLAG.fullmatch(word):
            out.append(_flag_value(pending, word))
            pending = None
            continue
        pending = None
        if program in _MYSQL_CLIENTS and word.startswith("-p") and len(word) > 2:
            out.append("-p" + REDACTED)
            continue
        alone = _FLAG_ALONE.fullmatch(word)
        if alone is not None:
            name = alone.group(3)
            if secret_name(name) or name in _PAIR_FLAGS:
                pending = name
            elif word in _PROGRAM_FLAGS.get(program, {}):
                pending = _PROGRAM_FLAGS[program][word]
            out.append(word)
            continue
        out.append(_redact_assignment(word))
    return out


def _flag_value(flag: str, value: str) -> str:
    if flag == "userpass":
        user, sep, _ = value.partition(":")
        return f"{user}:{REDACTED}" if sep else value  # without a password curl asks
    if flag in _PAIR_FLAGS:
        name, sep, _ = value.partition("=")
        return f"{name}={REDACTED}" if sep else REDACTED
    return REDACTED


def _redact_assignment(word: str) -> str:
    match = _ASSIGNMENT.fullmatch(word)
    if match is None:
        return word
    prefix, name, sep, value = match.groups()
    slash = prefix.lstrip("'\"") == "/"
    if sep == ":" and not slash:
        return word  # host:port, C:\path, scheme:... are not assignments
    if not value:
        return word
    if secret_name(name):
        return f"{prefix}{name}{sep}{REDACTED}"
    if name in _PAIR_FLAGS and prefix.lstrip("'\""):  # --customer=NAME=TOKEN
        return f"{prefix}{name}{sep}{_flag_value(name, value)}"
    return word


def _redact_inner_words(arg: str) -> str:
    """An argument holding a whole command (sh -c "...", a rewritten process title)."""
    if not _WHITESPACE.search(arg):
        return arg
    parts = _WHITESPACE.split(arg)  # words at even indices, the separators between
    words = parts[0::2]
    redacted = _redact_words(words, _program(words[0]) if words else "")
    parts[0::2] = redacted
    return "".join(parts)


def _redact_inline(text: str) -> str:
    """Secrets embedded anywhere in the text, whatever the argument boundaries."""
    text = _URL_PASSWORD.sub(lambda m: f"{m.group(1)}:{REDACTED}@", text)
    text = _SCHEME_CREDENTIALS.sub(lambda m: f"{m.group(1)}{m.group(2)}{REDACTED}", text)
    text = _HEADER.sub(_header, text)
    return _INLINE_PAIR.sub(_inline_pair, text)


def _header(match: re.Match[str]) -> str:
    name = match.group(1)
    if not secret_name(name):
        return match.group(0)
    start, end = match.span(2)
    whole = match.group(0)
    offset = match.start(0)
    return whole[: start - offset] + REDACTED + whole[end - offset :]


def _inline_pair(match: re.Match[str]) -> str:
    name, value = match.groups()
    if not value or not secret_name(name):
        return match.group(0)
    return f"{name}={REDACTED}"
