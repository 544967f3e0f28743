"""Posting to a receiver over HTTP (webhook, Alertmanager): redirects followed safely, an
HTTP answer turned into a `DeliveryFailed` that says whether to retry, the signature.
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Any

import httpx

from tripline.collector.sinks.base import DeliveryFailed

# 307/308 keep the method and body; this many hops at most, to the same scheme only.
MAX_REDIRECTS = 5


def http_failure(response: httpx.Response, what: str) -> DeliveryFailed:
    retry_after = None
    header = response.headers.get("retry-after")
    if header and header.isdigit():
        retry_after = float(header)
    # 3xx reaching here (301/302/303, or a 307/308 not followed): a receiver moved, an
    # operator fixes the URL; retried then parked, so a retry after the fix still sends it.
    status = response.status_code
    retryable = status in (408, 425, 429) or status >= 500 or 300 <= status < 400
    return DeliveryFailed(
        f"{what} answered HTTP {response.status_code}: {response.text[:200]}",
        retryable=retryable,
        retry_after=retry_after,
    )


def sign(secret: str, body: bytes) -> str:
    """The X-Tripline-Signature header value: HMAC-SHA256 of the exact body."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


async def post_following_redirects(
    client: httpx.AsyncClient, url: str, what: str, **kwargs: Any
) -> httpx.Response:
    """POST, following 307/308 (which keep method and body) to the same scheme, at most
    MAX_REDIRECTS hops. Other redirects are answers for the caller to judge; a redirect
    to another scheme (https to http would send the body in clear) or too deep is a
    retryable failure, never a final one."""
    scheme = httpx.URL(url).scheme
    for _ in range(MAX_REDIRECTS + 1):
        try:
            response = await client.post(url, **kwargs)
        except httpx.HTTPError as exc:
            raise DeliveryFailed(
                f"{what} unreachable: {exc!r}", retryable=True, unreachable=True
            ) from None
        if response.status_code not in (307, 308) or "location" not in response.headers:
            return response
        try:
            target = httpx.URL(url).join(response.headers["location"])
        except (httpx.InvalidURL, ValueError):
            raise DeliveryFailed(
                f"{what} redirected to an invalid location", retryable=True
            ) from None
        if target.scheme != scheme:
            raise DeliveryFailed(
                f"{what} redirected from {scheme} to {target.scheme}; not followed",
                retryable=True,
            )
        url = str(target)
    raise DeliveryFailed(f"{what} redirected more than {MAX_REDIRECTS} times", retryable=True)
