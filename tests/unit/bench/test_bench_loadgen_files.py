"""bench.loadgen's open-file check: what one process must hold, so a 20,000-PC run with
--workers 2 (about 10,000 sockets per worker) starts under a 20,000 hard limit."""

from __future__ import annotations

from bench.loadgen import FD_HEADROOM, sockets_per_process


def test_workers_and_generator_processes_share_the_connections() -> None:
    server, generator = sockets_per_process(20_000, 2, 2, baseline=False)
    assert (server, generator) == (10_500, 10_000)
    assert max(server, generator) + FD_HEADROOM < 20_000


def test_one_worker_or_the_bare_baseline_holds_every_connection() -> None:
    assert sockets_per_process(20_000, 1, 2, baseline=False) == (20_000, 10_000)
    assert sockets_per_process(20_000, 2, 1, baseline=True) == (20_000, 20_000)
