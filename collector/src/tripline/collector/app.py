"""Wire the collector together and run it: store, rules, gRPC, HTTP, timers, signals."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
from collections.abc import Callable
from typing import Any

from grpc import aio
from grpc_health.v1 import health_pb2_grpc
from prometheus_client import CollectorRegistry, generate_latest

from tripline.alerts.rules import RuleFileError
from tripline.collector import enrollment, limits, tls
from tripline.collector.api import ApiContext
from tripline.collector.background import count_tickets, evaluation_ticker
from tripline.collector.committer import Committer
from tripline.collector.config import CollectorConfig
from tripline.collector.delivery import Deliverer
from tripline.collector.delivery_leases import lease_owner
from tripline.collector.exposition import SeriesExposition
from tripline.collector.grpcserver import (
    bind_address,
    connection_budget,
    grpc_server_options,
    raise_open_file_limit,
)
from tripline.collector.http import build_app
from tripline.collector.httpserver import EmbeddedUvicorn, bound_port, embedded_uvicorn
from tripline.collector.liveness import Liveness
from tripline.collector.lockfile import DataDirLock
from tripline.collector.metricsmerge import MergedRenderer, internal_routes
from tripline.collector.metricspage import MetricsPage
from tripline.collector.pipeline import Pipeline
from tripline.collector.readiness import Readiness
from tripline.collector.ruleset import load_rule_set, series_retention, series_window
from tripline.collector.selfmetrics import CollectorMetrics, TicketCountCollector
from tripline.collector.server import CollectorService
from tripline.collector.sinks import build_sink
from tripline.collector.state import AgentLive, LiveState
from tripline.collector.store import Store
from tripline.collector.ticketcounts import TicketCounts
from tripline.collector.workerready import AllWorkersReady, ready_route
from tripline.collector.workers import WorkerRole, watch_supervisor
from tripline.common import files
from tripline.common.config import parse_hostport
from tripline.common.tls import PLAINTEXT_WARNING
from tripline.v1 import tripline_pb2_grpc as pb_grpc

log = logging.getLogger(__name__)


class CollectorApp:
    def __init__(
        self,
        config: CollectorConfig,
        clock: Callable[[], float] = time.time,
        worker: WorkerRole | None = None,
    ) -> None:
        """``worker``: one of several processes of ``--workers N`` (collector.workers)."""
        self.config = config
        self.worker = worker
        self.clock = clock
        self.rules = load_rule_set(config.rules)
        self.registry = CollectorRegistry()
        self.metrics = CollectorMetrics(self.registry)
        self.store = Store(
            config.effective_database_url, on_lock_wait=self.metrics.store_lock_wait.observe
        )
        # a worker's supervisor holds the lock for all of them
        file = self.store.file
        self._owner = DataDirLock(file.path) if file is not None and worker is None else None
        self.state = LiveState(
            window=series_window(self.rules),
            staleness=3 * config.interval,
            retention=series_retention(self.rules),
        )
        self.grpc_port = 0
        self.http_port = 0
        self._tasks: list[asyncio.Task[None]] = []
        self._server: aio.Server | None = None
        self._http: EmbeddedUvicorn | None = None
        # Until start() has finished, /readyz says "starting" and gRPC health NOT_SERVING.
        self.readiness = Readiness(self.store, self.metrics)
        self._accept_log = limits.LogThrottle(every=10.0)
        self._open_files = -1

    async def start(self) -> None:
        config = self.config
        worker = self.worker
        # Before anything else: a missing or unusable certificate stops the start here.
        # Validity is judged by the wall clock, as the TLS handshake itself does.
        tls_files = tls.server_files(config, time.time())
        if config.database_url is None:
            # Tokens (hashed), tickets with host details: owner-only whatever the umask.
            files.private_dir(config.data_dir, "data_dir")
            files.private_database(config.database_file, "data_dir")
        elif (database_file := files.sqlite_file(config.database_url)) is not None:
            files.private_database(database_file, "database_url")
        if self._owner is not None:
            # Before the first connection: a second collector must not even migrate.
            self._owner.acquire()
        loop = asyncio.get_running_loop()

        def health_changed(healthy: bool, _reason: str) -> None:
            loop.call_soon_threadsafe(self.readiness.store_health_changed, healthy)

        self.store.health.on_change = health_changed
        await asyncio.to_thread(
            self.store.migrate, lambda line: log.info(line, extra={"phase": "migrate"})
        )
        now = self.clock()
        for customer, token in config.customers.items():
            await asyncio.to_thread(self._ensure_enrollment_token, customer, token, now)
        # Ready only once a write reached the database; if it cannot, the collector serves
        # NOT_SERVING and the ticker probes until it can.
        await self.readiness.probe_store(now)
        self.committer = Committer(self.store, self.metrics, window=config.commit_window)
        liveness = Liveness(store=self.store, state=self.state, config=config, clock=self.clock)
        self._truncated_logged: set[str] = set()
        self.exposition = SeriesExposition(
            self.state,
            liveness.is_up,
            max_bytes_per_agent=config.max_metrics_bytes_per_agent,
            on_truncated=self._exposition_truncated,
        )
        if config.routes:
            self.deliverer = Deliverer(
                self.store,
                [build_sink(route) for route in config.routes],
                self.metrics,
                max_attempts=config.delivery_max_attempts,
                park_after=config.delivery_park_after,
                lease=config.delivery_lease,
                # workers take turns per route like separate collectors
                owner=lease_owner(
                    str(config.data_dir.resolve())
                    + ("" if worker is None else f"#worker{worker.index}")
                ),
            )
            self.readiness.deliverer = self.deliverer
        # Counted now, so the first scrape after a restart is right; then off the loop
        # when tickets change (_count_tickets), never per scrape.
        self.ticket_counts = TicketCounts(self.store)
        await asyncio.to_thread(self.ticket_counts.refresh, now)
        self.pipeline = Pipeline(
            store=self.store,
            state=self.state,
            rules=self.rules,
            config=config,
            metrics=self.metrics,
            committer=self.committer,
            clock=self.clock,
            liveness=liveness,
            on_report=self.exposition.update,
            on_ticket_change=self._tickets_changed,
            on_retire=self._retire,
        )
        await asyncio.to_thread(self.pipeline.restore, now)
        self.registry.register(TicketCountCollector(lambda: self.ticket_counts.counts))
        self.metrics_page = MetricsPage(self._render_metrics)
        if worker is not None and worker.index == 0 and worker.count > 1:
            merged = MergedRenderer(
                self.exposition,
                self.registry,
                worker.peers,
                worker.secret,
                on_peer_error=self.metrics.worker_metrics_errors.inc,
            )
            self.metrics_page = MetricsPage(merged.render)
        self.service = CollectorService(self.pipeline, config, self.metrics)

        soft, hard = raise_open_file_limit()
        grpc_connections = connection_budget(soft, config.http_max_connections)
        self._open_files = soft
        self.metrics.open_files_limit.set(soft)
        log.info(
            "connection capacity",
            extra={
                "open_files_soft": soft,
                "open_files_hard": hard,
                "grpc_connections": grpc_connections,
                "http_connections": config.http_max_connections,
                "max_streams": config.max_streams,
            },
        )
        asyncio.get_running_loop().set_exception_handler(self._loop_exception)
        self._server = aio.server(
            options=grpc_server_options(config, grpc_connections, share_port=worker is not None)
        )
        self.readiness.listening = True
        pb_grpc.add_CollectorServicer_to_server(self.service, self._server)
        health_pb2_grpc.add_HealthServicer_to_server(self.readiness.servicer, self._server)
        # Known, and not serving, from the first connection: a health check between the
        # port opening and the end of start() gets NOT_SERVING, never NOT_FOUND.
        await self.readiness.set_health(False)
        host, port = parse_hostport(config.listen, "listen")
        address = bind_address(host, port)
        if tls_files is None:
            log.warning(PLAINTEXT_WARNING, extra={"grpc": config.listen})
            self.grpc_port = self._server.add_insecure_port(address)
        else:
            credentials = tls.server_credentials(tls_files)
            self.grpc_port = self._server.add_secure_port(address, credentials)
        await self._server.start()

        http_host, http_port = parse_hostport(config.http_listen, "http_listen")
        app = build_app(
            self.registry,
            # worker 0 of several is ready only when every worker is (collector.workerready)
            AllWorkersReady(self.readiness.ready, worker)
            if worker is not None and worker.index == 0 and worker.count > 1
            else self.readiness.ready,
            page=self.metrics_page,
            extra_routes=(
                [
                    *internal_routes(self.exposition, self.registry, worker.index, worker.secret),
                    ready_route(self.readiness.ready, worker.secret),
                ]
                if worker is not None and worker.index > 0
                else ()
            ),
            api=ApiContext(store=self.store, pipeline=self.pipeline, clock=self.clock),
            web_refused=lambda why: self.metrics.web_refusals.labels(why).inc(),
        )
        self._http = embedded_uvicorn(
            app,
            http_host,
            http_port,
            config,
            lambda why: self.metrics.http_connections_closed.labels(why).inc(),
        )
        # first in _tasks: stop() lets it finish (should_exit) rather than cancel it
        self._tasks.append(asyncio.create_task(self._http.serve()))
        self.http_port = await bound_port(self._http, self._tasks[-1])
        if worker is not None and worker.index > 0:
            worker.announce(self.http_port)

        self._tasks.append(asyncio.create_task(self.committer.run()))
        self._tasks.append(
            asyncio.create_task(
                evaluation_ticker(self.pipeline, self.readiness, self.metrics, config, self.clock)
            )
        )
        self._tasks.append(
            asyncio.create_task(count_tickets(self.ticket_counts, self.metrics, config, self.clock))
        )
        if config.routes:
            self._tasks.append(asyncio.create_task(self.deliverer.run()))
        serving = self.store.health.healthy
        await self.readiness.set_health(serving)
        self.readiness.started = True
        log.info(
            "collector ready" if serving else "collector started, store not writable",
            extra={
                "grpc": f"{host}:{self.grpc_port}",
                "tls": _tls_mode(tls_files),
                "http": f"{http_host}:{self.http_port}",
                "database": _redact(config.effective_database_url),
                "rules": str(config.rules or "default rules"),
                "rule_count": len(self.rules.rules),
                "agents": len(self.state.agents),
            },
        )

    def _exposition_truncated(self, live: AgentLive, left_out: int) -> None:
        self.metrics.limit_hits.labels("metrics_bytes_per_agent").inc()
        self.metrics.exposition_series_left_out.inc(left_out)
        if live.agent_id not in self._truncated_logged:  # once per agent and process
            if len(self._truncated_logged) < 10_000:
                self._truncated_logged.add(live.agent_id)
            log.warning(
                "series left out of /metrics: agent at max_metrics_bytes_per_agent",
                extra={
                    "agent_id": live.agent_id,
                    "limit": self.config.max_metrics_bytes_per_agent,
                    "left_out": left_out,
                },
            )

    def _loop_exception(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        """asyncio reports a failed accept (out of descriptors: EMFILE/ENFILE, or memory)
        here once per listening socket and retry (1 s); count each, log at most one line
        per 10 s with the number swallowed. Anything else goes to asyncio's handler."""
        if context.get("message") == "socket.accept() out of system resource":
            self.metrics.accept_errors.labels("http").inc()
            swallowed = self._accept_log.allow("http", time.monotonic())
            if swallowed is not None:
                log.error(
                    "cannot accept HTTP connections: out of system resources",
                    extra={
                        "error": str(context.get("exception")),
                        "suppressed": swallowed,
                        "open_files_limit": self._open_files,
                    },
                )
            return
        loop.default_exception_handler(context)

    def _retire(self, agent_id: str) -> None:
        """A revoked agent leaves live state: drop what else is kept per agent."""
        self.exposition.forget(agent_id)
        self.service.rate.forget(agent_id)
        self.service.hellos.forget(agent_id)

    def reload_rules(self) -> bool:
        """SIGHUP: load the rule file again; on error keep the old rules and say why."""
        try:
            rules = load_rule_set(self.config.rules)
        except RuleFileError as exc:
            self.metrics.rule_reloads.labels("error").inc()
            log.error("rule reload failed, keeping the previous rules", extra={"error": str(exc)})
            return False
        self.pipeline.set_rules(rules)
        self.state.window = series_window(rules)
        self.state.set_retention(series_retention(rules))
        self.metrics.rule_reloads.labels("ok").inc()
        log.info("rules reloaded", extra={"rule_count": len(rules.rules)})
        return True

    async def stop(self, grace: float = 2.0) -> None:
        self.readiness.stopping = True
        await self.readiness.set_health(False)
        if self._server is not None:
            await self._server.stop(grace)
        if self._http is not None:
            self._http.should_exit = True
        for task in self._tasks:
            if task is not self._tasks[0]:
                task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self.store.close()
        if self._owner is not None:
            self._owner.release()

    def _ensure_enrollment_token(self, customer: str, token: str, now: float) -> None:
        with self.store.transaction() as conn:
            enrollment.ensure_token(conn, customer, token, now)

    def _tickets_changed(self) -> None:
        """A ticket change this process committed: recount, and wake delivery."""
        self.ticket_counts.changed()
        deliverer = getattr(self, "deliverer", None)
        if deliverer is not None:
            deliverer.notify()

    def _render_metrics(self) -> bytes:
        """The whole /metrics page; runs in a worker thread (collector.metricspage)."""
        # agents' series are prepared as reports arrive; the registry holds our own
        return self.exposition.render() + generate_latest(self.registry)


def _tls_mode(files: tls.ServerFiles | None) -> str:
    if files is None:
        return "off (plaintext)"
    return "mutual" if files.client_ca is not None else "server"


def _redact(url: str) -> str:
    """A database URL without its password, for logs."""
    if "@" not in url or "://" not in url:
        return url
    scheme, rest = url.split("://", 1)
    creds, host = rest.rsplit("@", 1)
    user = creds.split(":", 1)[0]
    return f"{scheme}://{user}:***@{host}"


async def serve(config: CollectorConfig, worker: WorkerRole | None = None) -> None:
    """Run until SIGINT/SIGTERM; SIGHUP reloads rules."""
    app = CollectorApp(config, worker=worker)
    await app.start()
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    if worker is not None:
        watcher = asyncio.create_task(watch_supervisor(worker, stop))
    if hasattr(signal, "SIGHUP"):
        loop.add_signal_handler(signal.SIGHUP, app.reload_rules)
    await stop.wait()
    log.info("collector stopping")
    if worker is not None:
        watcher.cancel()
    await app.stop()
