"""A running collector's HTTP API, for the commands that take --api-url."""

from __future__ import annotations

import argparse
import dataclasses
from typing import Any

from tripline.collector.cli.errors import CliError
from tripline.common.terminal import escape


def api_flags(sp: argparse.ArgumentParser, *, help_url: str, help_token: str) -> None:
    sp.add_argument("--api-url", help=help_url)
    sp.add_argument("--api-token", help=help_token)


@dataclasses.dataclass(frozen=True)
class ApiClient:
    """A running collector's HTTP API, as `tripline tickets --api-url` reaches it."""

    base: str  # ending in /api/v1
    token: str = dataclasses.field(repr=False)

    def call(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, Any] | None = None,
        body: Any = None,
        timeout: float = 10.0,
    ) -> Any:
        """The answer's JSON; an unreachable API or an error status is a CliError."""
        response = self._send(method, path, params=params, body=body, timeout=timeout)
        try:
            return response.json()
        except ValueError:
            return None

    def text(
        self, path: str, *, params: dict[str, Any] | None = None, timeout: float = 60.0
    ) -> str:
        """A GET's body as text (a report's HTML or CSV); errors as `call`."""
        return str(self._send("GET", path, params=params, body=None, timeout=timeout).text)

    def _send(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, Any] | None,
        body: Any,
        timeout: float,
    ) -> Any:
        import httpx  # only the commands that reach an API pay for it

        headers = {"Authorization": f"Bearer {self.token}"}
        query = {k: v for k, v in (params or {}).items() if v is not None}
        try:
            response = httpx.request(
                method, self.base + path, params=query, json=body, headers=headers, timeout=timeout
            )
        except httpx.HTTPError as exc:
            raise CliError(f"cannot reach the collector API at {self.base}: {exc}") from None
        if response.status_code >= 400:
            try:
                data = response.json()
            except ValueError:
                data = None
            error = data.get("error") if isinstance(data, dict) else None
            status = response.status_code
            raise CliError(f"the collector API answered {status}: {escape(error or response.text)}")
        return response


def api_client(args: argparse.Namespace) -> ApiClient | None:
    """The API to use instead of the data dir, when one is configured; None otherwise."""
    from tripline.collector.config import load_api_client_config

    config = load_api_client_config(flags={"url": args.api_url, "token": args.api_token})
    local = args.data_dir is not None or args.database_url is not None
    if config.url is None or (local and args.api_url is None):
        return None
    if local:
        raise CliError("give --api-url or --data-dir/--database-url, not both")
    if not config.token:
        raise CliError("--api-url needs an API token: set TRIPLINE_API_TOKEN (or --api-token)")
    if getattr(args, "actor", None):
        raise CliError("through the API the actor is the API token's name: drop --actor")
    from tripline.collector.urls import API_PREFIX  # imports no web framework

    base = config.url.rstrip("/")
    return ApiClient(base if base.endswith(API_PREFIX) else base + API_PREFIX, config.token)
