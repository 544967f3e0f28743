"""The page's session cookie, its CSRF token and bounded form parsing.

The session cookie holds a random per-login nonce and the operator's API token; it is
HttpOnly (scripts never see the token), SameSite=Strict, Secure when the request came
over https, and scoped to the page's path so the API and /metrics never receive it. The
CSRF token is an HMAC of the nonce keyed by the API token: stateless (any collector
process and any restart can check it), different for every login, and impossible to
compute without the cookie a cross-site page cannot read.
"""

from __future__ import annotations

import hmac
import re
import secrets
import urllib.parse
from dataclasses import dataclass

from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response

SESSION_COOKIE = "tripline_session"
# Before login there is no session: the login form carries a double-submit token instead,
# so another site cannot log the operator in as someone else.
LOGIN_COOKIE = "tripline_login"
# A comment of the API's 10,000 characters, each percent-encoded as up to 12 bytes.
MAX_FORM_BYTES = 128 * 1024
MAX_FORM_FIELDS = 8

_NONCE = r"[A-Za-z0-9_-]{22,64}"
_SESSION = re.compile(rf"({_NONCE})\.(tla_[A-Za-z0-9_-]{{1,250}})")
API_TOKEN = re.compile(r"tla_[A-Za-z0-9_-]{1,250}")
LOGIN_NONCE = re.compile(_NONCE)


class FormRefused(Exception):
    """A POST the page will not act on; `reason` labels the refusal counter."""

    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.reason = reason
        self.message = message


@dataclass(frozen=True)
class Session:
    nonce: str
    api_token: str

    @property
    def csrf(self) -> str:
        mac = hmac.new(
            self.api_token.encode(), b"tripline-web-csrf:" + self.nonce.encode(), "sha256"
        )
        return mac.hexdigest()

    def cookie_value(self) -> str:
        return f"{self.nonce}.{self.api_token}"


def new_nonce() -> str:
    return secrets.token_urlsafe(24)


def new_session(api_token: str) -> Session:
    return Session(new_nonce(), api_token)


def current(request: Request) -> Session | None:
    """The request's session, or None when it has none or a malformed one."""
    match = _SESSION.fullmatch(request.cookies.get(SESSION_COOKIE, ""))
    return None if match is None else Session(match.group(1), match.group(2))


def set_cookie(response: Response, request: Request, name: str, value: str) -> None:
    response.set_cookie(
        name,
        value,
        path=request.scope.get("root_path") or "/",
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
    )


def clear_cookie(response: Response, request: Request, name: str) -> None:
    response.delete_cookie(
        name,
        path=request.scope.get("root_path") or "/",
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
    )


def check_origin(request: Request) -> None:
    """Refuse a POST a browser says came from another site (a second line behind the
    CSRF token; browsers that send neither header rely on the token alone)."""
    if request.headers.get("sec-fetch-site", "same-origin") not in ("same-origin", "none"):
        raise FormRefused(403, "origin", "this form was sent from another site")
    origin = request.headers.get("origin")
    # "null" is what Chromium sends for the page's own forms under Referrer-Policy:
    # no-referrer; it says nothing either way, so the CSRF token alone decides.
    if origin is not None and origin != "null":
        host = request.headers.get("host", "")
        if urllib.parse.urlsplit(origin).netloc != host:
            raise FormRefused(403, "origin", "this form was sent from another site")


def check_csrf(expected: str, form: dict[str, str]) -> None:
    if not hmac.compare_digest(form.get("csrf", "").encode(), expected.encode()):
        raise FormRefused(
            403, "csrf", "the form is stale or was not sent by this page; reload and try again"
        )


async def read_form(request: Request) -> dict[str, str]:
    """An application/x-www-form-urlencoded body of at most MAX_FORM_BYTES and
    MAX_FORM_FIELDS fields, UTF-8, each field once; else FormRefused."""
    ctype = request.headers.get("content-type", "").partition(";")[0].strip().lower()
    if ctype != "application/x-www-form-urlencoded":
        raise FormRefused(
            415, "bad_form", "send the page's form (application/x-www-form-urlencoded)"
        )
    too_large = FormRefused(413, "too_large", f"the form must be at most {MAX_FORM_BYTES} bytes")
    declared = request.headers.get("content-length")
    if declared is not None and declared.strip().isdigit() and int(declared) > MAX_FORM_BYTES:
        raise too_large
    raw = bytearray()
    try:
        async for chunk in request.stream():
            raw += chunk
            if len(raw) > MAX_FORM_BYTES:
                raise too_large
    except ClientDisconnect:
        raise FormRefused(400, "bad_form", "the form was not received whole") from None
    try:
        pairs = urllib.parse.parse_qsl(
            raw.decode("ascii"),
            keep_blank_values=True,
            max_num_fields=MAX_FORM_FIELDS,
            encoding="utf-8",
            errors="strict",
        )
    except (UnicodeDecodeError, ValueError):
        raise FormRefused(400, "bad_form", "the form is not valid UTF-8 form data") from None
    form: dict[str, str] = {}
    for key, value in pairs:
        if key in form:
            raise FormRefused(400, "bad_form", f"form field {key!r} sent more than once")
        form[key] = value
    return form
