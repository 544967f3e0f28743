"""``tripline collector --workers N``: N collector processes on one host, one port.

The supervisor (this module, the process started by the CLI) takes the data directory's
lock, runs the migrations and writes the configured enrollment tokens once, then starts
N worker processes, each a whole :class:`~tripline.collector.app.CollectorApp`:

- every worker listens on the same gRPC port: grpc-core sets ``SO_REUSEPORT`` on Linux
  and the kernel spreads new connections over the workers (measured in
  docs/scale-out.md); the supervisor holds the port (picks it, with port 0) and refuses
  to start when another process serves it;
- worker 0 serves the HTTP port (/metrics, /readyz, the API); the others serve a
  private loopback port whose address they write to ``<data_dir>/workers/<index>.port``,
  from which worker 0 builds one page (:mod:`collector.metricsmerge`);
- what must be shared lives in the database, as with several collectors on PostgreSQL:
  the applied seq per agent instance (exactly-once apply, whichever worker a reconnect
  lands on), one unresolved ticket per problem (the unique index), alert states,
  last-seen times (liveness across workers), delivery leases (per worker).

A worker that dies is restarted (after a second, logged); SIGHUP is forwarded (rule
reload); SIGTERM or SIGINT stops them all. A worker whose supervisor disappears
(SIGKILL) stops by itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import multiprocessing
import os
import secrets
import signal
import socket
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tripline.collector.config import CollectorConfig
from tripline.collector.lockfile import DataDirLock
from tripline.common import files, logs
from tripline.common.config import parse_hostport

log = logging.getLogger(__name__)

RESTART_DELAY = 1.0


@dataclass(frozen=True)
class WorkerRole:
    """What a worker process needs to know about its siblings."""

    index: int
    count: int
    secret: str = dataclasses.field(repr=False)
    run_dir: Path
    supervisor_pid: int

    def announce(self, http_port: int) -> None:
        """Publish this worker's private HTTP port for worker 0 (written atomically)."""
        path = self.run_dir / f"{self.index}.port"
        tmp = path.with_suffix(".tmp")
        tmp.write_text(str(http_port))
        tmp.replace(path)

    def peers(self) -> list[str]:
        """Base URLs of the other workers' private ports (those that have announced)."""
        urls = []
        for index in range(1, self.count):
            try:
                port = int((self.run_dir / f"{index}.port").read_text())
            except (OSError, ValueError):
                continue  # not started yet, or restarting
            urls.append(f"http://127.0.0.1:{port}")
        return urls


def worker_config(config: CollectorConfig, role: WorkerRole, grpc_port: int) -> CollectorConfig:
    host, _ = parse_hostport(config.listen, "listen")
    listen = f"[{host}]:{grpc_port}" if ":" in host else f"{host}:{grpc_port}"
    http = config.http_listen if role.index == 0 else "127.0.0.1:0"
    return dataclasses.replace(config, listen=listen, http_listen=http)


def _worker_main(config: CollectorConfig, role: WorkerRole) -> None:
    from tripline.collector.app import serve

    logs.configure(config.log_format, config.log_level)
    asyncio.run(serve(config, role))


class PortInUse(Exception):
    """Another process already serves the gRPC port: the workers would share it with it."""

    def __init__(self, host: str, port: int, error: OSError) -> None:
        super().__init__(
            f"listen {host}:{port}: the port is already in use ({error.strerror}); another "
            "collector serves it? Stop it, or give this one another port"
        )


def _hold_port(host: str, port: int = 0) -> tuple[socket.socket, int]:
    """A bound, not listening, SO_REUSEPORT socket: the port stays ours for the workers.

    First a probe listens on the port without SO_REUSEPORT: that fails while any
    process listens there (a single collector, another ``--workers`` collector's
    workers), so a collector started by mistake on a served port fails at start, as a
    single collector does, instead of silently taking half the agents. (A bound socket
    that does not listen, like this one, does not stop the probe: two supervisors
    started in the same second can still both start.)"""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    if port != 0:
        probe = socket.socket(family, socket.SOCK_STREAM)
        try:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # TIME_WAIT is fine
            probe.bind((host, port))
            probe.listen(1)  # the kernel checks for listeners here
        except OSError as exc:
            raise PortInUse(host, port, exc) from None
        finally:
            probe.close()
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    return sock, int(sock.getsockname()[1])


def prepare(config: CollectorConfig) -> DataDirLock | None:
    """What one collector does once before serving: lock, migrate, tokens. Returns the
    lock (or None on PostgreSQL); raises as a single collector's start would."""
    from tripline.collector import enrollment
    from tripline.collector.store import Store

    store = Store(config.effective_database_url)
    lock = DataDirLock(store.file.path) if store.file is not None else None
    try:
        if config.database_url is None:
            files.private_dir(config.data_dir, "data_dir")
        if lock is not None:
            lock.acquire()
        store.migrate(lambda line: log.info(line, extra={"phase": "migrate"}))
        for customer, token in config.customers.items():
            with store.transaction() as conn:
                enrollment.ensure_token(conn, customer, token, time.time())
    finally:
        store.close()
    return lock


def run_workers(config: CollectorConfig) -> int:
    """Run ``config.workers`` workers until SIGTERM/SIGINT; 0 when they stopped cleanly."""
    count = config.workers
    host, port = parse_hostport(config.listen, "listen")
    holder, port = _hold_port(host, port)  # before the lock: nothing to undo when it fails
    try:
        lock = prepare(config)
    except BaseException:
        holder.close()
        raise
    run_dir = config.data_dir / "workers"
    files.private_dir(run_dir, "data_dir")
    for stale in run_dir.glob("*.port"):
        stale.unlink()
    secret = secrets.token_urlsafe(32)  # the workers' private ports answer only to it
    role_of = {i: WorkerRole(i, count, secret, run_dir, os.getpid()) for i in range(count)}
    context = multiprocessing.get_context("spawn")
    stop = threading.Event()
    procs: dict[int, Any] = {}

    def start(index: int) -> None:
        role = role_of[index]
        proc = context.Process(
            target=_worker_main,
            args=(worker_config(config, role, port), role),
            name=f"tripline-worker-{index}",
        )
        proc.start()
        procs[index] = proc
        log.info("worker started", extra={"worker": index, "pid": proc.pid, "grpc_port": port})

    def forward(sig: int) -> None:
        for proc in procs.values():
            if proc.is_alive() and proc.pid is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(proc.pid, sig)

    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    if hasattr(signal, "SIGHUP"):
        signal.signal(signal.SIGHUP, lambda *_: forward(signal.SIGHUP))
    try:
        for index in range(count):
            start(index)
        while not stop.wait(0.5):
            for index, proc in list(procs.items()):
                if not proc.is_alive() and not stop.is_set():
                    log.error(
                        "worker died; restarting it",
                        extra={"worker": index, "exit_code": proc.exitcode},
                    )
                    stop.wait(RESTART_DELAY)
                    if not stop.is_set():
                        start(index)
    finally:
        forward(signal.SIGTERM)
        codes = []
        for proc in procs.values():
            proc.join(20)
            if proc.is_alive():
                proc.kill()
                proc.join(5)
            codes.append(proc.exitcode)
        holder.close()
        if lock is not None:
            lock.release()
    return 0 if all(code == 0 for code in codes) else 1


async def watch_supervisor(role: WorkerRole, stop: asyncio.Event) -> None:
    """Set ``stop`` once the supervisor is gone (SIGKILLed): no worker outlives it."""
    while not stop.is_set():
        if os.getppid() != role.supervisor_pid:
            log.error("supervisor gone; worker stopping", extra={"worker": role.index})
            stop.set()
            return
        await asyncio.sleep(1.0)
