"""Only --workers shares the gRPC port: a second collector started by mistake on a port
another already serves fails at start instead of silently taking half the agents."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

import pytest

from tests.integration.conftest import collector_config, running_collector
from tripline.collector.app import CollectorApp
from tripline.collector.workers import PortInUse, _hold_port, run_workers


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


def test_workers_refuse_a_port_another_collector_serves(tmp_path: Path) -> None:
    """--workers shares its port with its own workers only: started on a port a single
    collector serves, it fails at start with the port named, before starting a worker."""

    async def main() -> None:
        async with running_collector(tmp_path / "first") as first:
            config = collector_config(
                tmp_path / "second", listen=f"127.0.0.1:{first.grpc_port}", workers=2
            )
            with pytest.raises(PortInUse, match=rf"127\.0\.0\.1:{first.grpc_port}.*in use"):
                await asyncio.to_thread(run_workers, config)
            assert not (tmp_path / "second" / "workers").exists()  # no worker was started

    asyncio.run(main())


def test_a_second_workers_collector_cannot_take_the_port_the_first_serves() -> None:
    """The first supervisor's held socket and one of its workers' listeners (grpc-core's
    options: SO_REUSEADDR and SO_REUSEPORT); a second supervisor on that port is refused."""
    first, port = _hold_port("127.0.0.1")
    worker = socket.socket()
    try:
        worker.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        worker.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        worker.bind(("127.0.0.1", port))
        worker.listen(8)
        with pytest.raises(PortInUse, match="already in use"):
            _hold_port("127.0.0.1", port)
    finally:
        worker.close()
        first.close()
    again, _ = _hold_port("127.0.0.1", port)  # free once the first collector is gone
    again.close()
