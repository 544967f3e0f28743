"""A running collector's HTTP API, for the commands that take --api-url."""

from __future__ import annotations

import argparse
import dataclasses
from typing import Any

from tripline.collector.cli.errors import CliError


def api_flags(sp: argparse.ArgumentParser, *, help_url: str, help_token: str) -> None:
    sp.add_argument("--api-url", help=help_url)
    sp.add_argument("--api-token", help=help_token)


@dataclasses.dataclass(frozen=True)
class ApiClient:
    """A running collector's HTTP API, as `tripline tickets --api-url` reaches it."""

    base: str  # ending in /api/v1
    token: str = dataclasses.field(repr=False)

    def call(
        self, method: str, path: str, *, params: dict[str, Any] | None = None, body: Any = None
    ) -> Any:
        """The answer's JSON; an unreachable API or an error status is a CliError."""
        import httpx  # only the commands that reach an API pay for it

        headers = {"Authorization": f"Bearer {self.token}"}
        query = {k: v for k, v in (params or {}).items() if v is not None}
        try:
            response = httpx.request(
                method, self.base + path, params=query, json=body, headers=headers, timeout=10.0
            )
        except httpx.HTTPError as exc:
            raise CliError(f"cannot reach the collector API at {self.base}: {exc}") from None
        try:
            data = response.json()
        except ValueError:
            data = None
        if response.status_code >= 400:
            error = data.get("error") if isinstance(data, dict) else None
            status = response.status_code
            raise CliError(f"the collector API answered {status}: {error or response.text}")
        return data


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
    # openapi.py, not api.py: the prefix's home that imports no web framework
    from tripline.collector.openapi import API_PREFIX

    base = config.url.rstrip("/")
    return ApiClient(base if base.endswith(API_PREFIX) else base + API_PREFIX, config.token)
