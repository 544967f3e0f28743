"""Only --workers shares the gRPC port: a second collector started by mistake on a port
another already serves fails at start instead of silently taking half the agents."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from tests.integration.conftest import collector_config, running_collector
from tripline.collector.app import CollectorApp


def test_a_second_collector_cannot_bind_the_port_a_first_one_serves(tmp_path: Path) -> None:
    async def main() -> None:
        async with running_collector(tmp_path / "first") as first:
            second = CollectorApp(
                collector_config(tmp_path / "second", listen=f"127.0.0.1:{first.grpc_port}")
            )
            try:
                with pytest.raises(RuntimeError, match=r"[Ff]ailed to bind"):
                    await second.start()
            finally:
                await second.stop(grace=0.1)

    asyncio.run(main())
