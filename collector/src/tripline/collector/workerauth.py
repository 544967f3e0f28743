"""The private channel between the workers of ``tripline collector --workers N``.

Worker 0 asks its siblings, over loopback ports they announce in the data directory's
owner-only run directory, for their /metrics parts and their readiness. Each request
and each answer is signed with the workers' shared secret (HMAC-SHA256 over a fresh
nonce, the path and the body), and the secret itself never crosses the wire. So a
local process that takes a dead worker's port before its restart learns nothing it can
reuse from the requests it receives, and what it answers is refused rather than
decoded: it cannot put lines on worker 0's page or fake a worker's readiness.

Answers are bounded (``max_bytes``) before they are checked, and their bodies are
decoded by code that checks every length and type (collector.metricsmerge), never by
``marshal`` or ``pickle``.
"""

from __future__ import annotations

import hmac
import secrets
import urllib.parse
import urllib.request
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

NONCE_HEADER = "x-tripline-worker-nonce"
SIGNATURE_HEADER = "x-tripline-worker-signature"
_NONCE_HEX = 32  # 16 random bytes


class PeerError(Exception):
    """A worker's private port did not answer as expected."""


# Workers talk over loopback only. urllib's default opener honours HTTP_PROXY from the
# environment, and a collector host behind a corporate proxy usually has one set: the
# request would go to the proxy and the merge would fail. No proxy, ever.
_PEER_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def open_peer(request: urllib.request.Request, timeout: float) -> Any:
    """Open a request to a sibling worker's private port, never through a proxy."""
    return _PEER_OPENER.open(request, timeout=timeout)


def signature(secret: str, kind: str, nonce: str, path: str, body: bytes) -> str:
    """HMAC-SHA256 of one request (``kind`` "request") or answer ("answer")."""
    mac = hmac.new(secret.encode(), digestmod="sha256")
    for piece in (kind, nonce, path):
        mac.update(piece.encode())
        mac.update(b"\0")
    mac.update(body)
    return mac.hexdigest()


def call(url: str, secret: str, body: bytes | None, *, timeout: float, max_bytes: int) -> bytes:
    """A signed request to a sibling (GET without a body, POST with one); the answer's
    body once its signature checks. Raises PeerError for anything else: refused,
    unreachable, too large, unsigned or signed with another secret."""
    nonce = secrets.token_hex(_NONCE_HEX // 2)
    path = urllib.parse.urlsplit(url).path
    request = urllib.request.Request(
        url,
        data=body,
        headers={
            NONCE_HEADER: nonce,
            SIGNATURE_HEADER: signature(secret, "request", nonce, path, body or b""),
        },
        method="GET" if body is None else "POST",
    )
    try:
        with open_peer(request, timeout) as response:
            answer: bytes = response.read(max_bytes + 1)
            given = response.headers.get(SIGNATURE_HEADER, "")
    except OSError as exc:  # refused, timed out, reset; urllib's HTTPError for a 4xx/5xx
        raise PeerError(f"{url}: {exc}") from exc
    if len(answer) > max_bytes:
        raise PeerError(f"{url}: answer larger than {max_bytes} bytes")
    expected = signature(secret, "answer", nonce, path, answer)
    if not hmac.compare_digest(given.encode(), expected.encode()):
        raise PeerError(f"{url}: answer not signed with the workers' secret")
    return answer


def verified(request: Request, secret: str, body: bytes = b"") -> str | None:
    """The request's nonce when it is signed with ``secret``; None otherwise."""
    nonce = request.headers.get(NONCE_HEADER, "")
    given = request.headers.get(SIGNATURE_HEADER, "")
    if len(nonce) != _NONCE_HEX or not all(c in "0123456789abcdef" for c in nonce):
        return None
    expected = signature(secret, "request", nonce, request.url.path, body)
    if not hmac.compare_digest(given.encode(), expected.encode()):
        return None
    return nonce


def signed_answer(secret: str, nonce: str, path: str, body: bytes, media_type: str) -> Response:
    """A 200 answer to a verified request, signed for its nonce."""
    return Response(
        body,
        media_type=media_type,
        headers={SIGNATURE_HEADER: signature(secret, "answer", nonce, path, body)},
    )
