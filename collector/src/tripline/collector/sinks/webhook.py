"""The webhook sink: one signed JSON POST per ticket event."""

from __future__ import annotations

import json

import httpx

from tripline.collector.routes import Route
from tripline.collector.sinks.base import USER_AGENT, Delivery, finite
from tripline.collector.sinks.posting import http_failure, post_following_redirects, sign


class WebhookSink:
    def __init__(self, route: Route) -> None:
        self.route = route
        self._url = str(route.settings["url"])
        self._secret = str(route.settings.get("secret") or "")
        self.timeout = float(route.settings.get("timeout", 10))
        self._client = httpx.AsyncClient(timeout=self.timeout, headers={"user-agent": USER_AGENT})

    async def deliver(self, delivery: Delivery) -> None:
        body = json.dumps(
            finite(delivery.payload()), separators=(",", ":"), default=str, allow_nan=False
        ).encode()
        headers = {
            "content-type": "application/json",
            "x-tripline-event": str(delivery.event["kind"]),
            "x-tripline-idempotency-key": delivery.idempotency_key,
        }
        if self._secret:
            headers["x-tripline-signature"] = sign(self._secret, body)
        response = await post_following_redirects(
            self._client, self._url, "webhook", content=body, headers=headers
        )
        if not response.is_success:
            raise http_failure(response, "webhook")

    async def close(self) -> None:
        await self._client.aclose()
