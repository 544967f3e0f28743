"""Wire the collector together and run it: store, rules, gRPC, HTTP, timers, signals."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import uvicorn
from grpc import aio
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from prometheus_client import CollectorRegistry, generate_latest

from tripline.alerts.rules import RuleFileError, RuleSet, default_rules, load_rules
from tripline.collector import enrollment, limits, tls
from tripline.collector.api import ApiContext
from tripline.collector.committer import Committer
from tripline.collector.config import CollectorConfig
from tripline.collector.delivery import Deliverer
from tripline.collector.delivery_leases import lease_owner
from tripline.collector.exposition import SeriesExposition
from tripline.collector.http import HttpLimits, build_app, guarded_protocol
from tripline.collector.liveness import Liveness
from tripline.collector.lockfile import DataDirLock
from tripline.collector.metricsmerge import MergedRenderer, internal_routes
from tripline.collector.metricspage import MetricsPage
from tripline.collector.pipeline import Pipeline
from tripline.collector.selfmetrics import CollectorMetrics, TicketCountCollector
from tripline.collector.server import CollectorService
from tripline.collector.sinks import build_sink
from tripline.collector.state import AgentLive, LiveState
from tripline.collector.store import Store, StoreUnavailable
from tripline.collector.ticketcounts import TicketCounts
from tripline.collector.workerready import AllWorkersReady, ready_route
from tripline.collector.workers import WorkerRole, watch_supervisor
from tripline.common import files
from tripline.common.config import parse_hostport
from tripline.common.tls import PLAINTEXT_WARNING
from tripline.v1 import tripline_pb2_grpc as pb_grpc

log = logging.getLogger(__name__)

SERVICE_NAME = "tripline.v1.Collector"

# While the store refuses writes, a probe row is written this often (seconds), so health
# comes back even when no report arrives to show the store takes writes again.
STORE_PROBE_INTERVAL = 2.0


# Descriptors kept for everything but client connections: the store (SQLite WAL holds
# three, a PostgreSQL pool a few), log files, the rule file on reload, gRPC's own pipes.
RESERVED_FILES = 64


def grpc_server_options(
    config: CollectorConfig, max_connections: int | None = None, share_port: bool = False
) -> list[tuple[str, int]]:
    # Agents ping every 30 s; allow pings down to 10 s apart without calls so a
    # client's keepalive never earns a GOAWAY "too_many_pings".
    options = [
        ("grpc.max_receive_message_length", config.max_message_bytes),
        ("grpc.max_send_message_length", config.max_message_bytes),
        ("grpc.keepalive_time_ms", 60_000),
        ("grpc.keepalive_timeout_ms", 20_000),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.min_recv_ping_interval_without_data_ms", 10_000),
        ("grpc.http2.max_ping_strikes", 5),
        # A TCP connection that has not finished TLS and the HTTP/2 preface within the
        # Hello timeout is closed (gRPC's default is 120 s): an idle socket costs little.
        ("grpc.server_handshake_timeout_ms", int(config.hello_timeout * 1000)),
        # A connection with no call open (handshaken, but no stream) is sent GOAWAY and
        # closed; an agent keeps its Connect stream open, so this never touches one.
        ("grpc.max_connection_idle_ms", int(config.connection_idle_timeout * 1000)),
    ]
    # grpc-core sets SO_REUSEPORT on Linux by default: a second collector started by
    # mistake on the same port would bind it too and silently take half the agents.
    # Only --workers shares the port, on purpose (collector.workers).
    options.append(("grpc.so_reuseport", 1 if share_port else 0))
    if max_connections is not None:
        # Past it gRPC closes new connections at accept, before any handshake, so gRPC
        # clients can never take the descriptors the HTTP port and the store need.
        options.append(("grpc.max_allowed_incoming_connections", max_connections))
    return options


def raise_open_file_limit() -> tuple[int, int]:
    """Raise the soft RLIMIT_NOFILE to the hard limit (one connection is one descriptor,
    and a fleet is thousands); return (soft, hard) as they are now. Without the
    ``resource`` module (Windows) or permission, the limit stays and is returned."""
    try:
        import resource
    except ImportError:  # Windows: no per-process descriptor limit of this kind
        return (-1, -1)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else max(soft, 1_048_576)
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (ValueError, OSError) as exc:
            log.warning("cannot raise the open-file limit", extra={"error": str(exc)})
    return resource.getrlimit(resource.RLIMIT_NOFILE)


def connection_budget(open_files: int, http_max_connections: int) -> int | None:
    """gRPC connections the descriptor limit leaves after the HTTP port and the rest;
    None when the limit is unknown (no limit to protect)."""
    if open_files < 0:
        return None
    return max(16, open_files - http_max_connections - RESERVED_FILES)


def load_rule_set(path: Path | None) -> RuleSet:
    return default_rules() if path is None else load_rules(path)


def series_retention(rules: RuleSet) -> dict[str, float]:
    """History each metric needs: its longest rule window (a bare threshold needs none)."""
    retention: dict[str, float] = {}
    for rule in rules.threshold_rules:
        if rule.window is not None:
            retention[rule.metric] = max(retention.get(rule.metric, 0.0), rule.window.over)
    return retention


def series_window(rules: RuleSet) -> float:
    """History to keep per series: the longest rule window, at least 15 minutes."""
    longest = max((r.window.over for r in rules.threshold_rules if r.window), default=0.0)
    return max(900.0, longest + 60.0)


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
        self.store = Store(config.effective_database_url)
        # a worker's supervisor holds the lock for all of them
        file = self.store.file
        self._owner = DataDirLock(file.path) if file is not None and worker is None else None
        self._next_probe = 0.0
        self.state = LiveState(
            window=series_window(self.rules),
            staleness=3 * config.interval,
            retention=series_retention(self.rules),
        )
        self.grpc_port = 0
        self.http_port = 0
        self._tasks: list[asyncio.Task[None]] = []
        self._server: aio.Server | None = None
        self._http: uvicorn.Server | None = None
        self._health = health.aio.HealthServicer()
        self._health_tasks: set[asyncio.Future[None]] = set()
        self._stopping = False
        # Until start() has finished, /readyz says "starting" and gRPC health NOT_SERVING.
        self._started = False
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
            loop.call_soon_threadsafe(self._store_health_changed, healthy)

        self.store.health.on_change = health_changed
        await asyncio.to_thread(
            self.store.migrate, lambda line: log.info(line, extra={"phase": "migrate"})
        )
        now = self.clock()
        for customer, token in config.customers.items():
            await asyncio.to_thread(self._ensure_enrollment_token, customer, token, now)
        # Ready only once a write reached the database; if it cannot, the collector serves
        # NOT_SERVING and the ticker probes until it can.
        await self._probe_store(now)
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
        pb_grpc.add_CollectorServicer_to_server(self.service, self._server)
        health_pb2_grpc.add_HealthServicer_to_server(self._health, self._server)
        # Known, and not serving, from the first connection: a health check between the
        # port opening and the end of start() gets NOT_SERVING, never NOT_FOUND.
        await self._set_health(False)
        host, port = parse_hostport(config.listen, "listen")
        address = f"{_bracket(host)}:{port}"
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
            AllWorkersReady(self._ready, worker)
            if worker is not None and worker.index == 0 and worker.count > 1
            else self._ready,
            page=self.metrics_page,
            extra_routes=(
                [
                    *internal_routes(self.exposition, self.registry, worker.index, worker.secret),
                    ready_route(self._ready, worker.secret),
                ]
                if worker is not None and worker.index > 0
                else ()
            ),
            api=ApiContext(store=self.store, pipeline=self.pipeline, clock=self.clock),
            web_refused=lambda why: self.metrics.web_refusals.labels(why).inc(),
        )
        http_limits = HttpLimits(
            max_connections=config.http_max_connections,
            header_timeout=config.http_header_timeout,
            body_timeout=config.http_body_timeout,
        )
        self._http = _EmbeddedUvicorn(
            uvicorn.Config(
                app,
                host=http_host,
                port=http_port,
                log_level="warning",
                lifespan="off",
                http=guarded_protocol(
                    http_limits, lambda why: self.metrics.http_connections_closed.labels(why).inc()
                ),
                timeout_keep_alive=max(1, math.ceil(config.http_keepalive_timeout)),
            )
        )
        self._tasks.append(asyncio.create_task(self._http.serve()))
        while not self._http.started:
            if self._tasks[-1].done():
                self._tasks[-1].result()  # raises the bind error
            await asyncio.sleep(0.01)
        self.http_port = self._http.servers[0].sockets[0].getsockname()[1]
        if worker is not None and worker.index > 0:
            worker.announce(self.http_port)

        self._tasks.append(asyncio.create_task(self.committer.run()))
        self._tasks.append(asyncio.create_task(self._ticker()))
        self._tasks.append(asyncio.create_task(self._count_tickets()))
        if config.routes:
            self._tasks.append(asyncio.create_task(self.deliverer.run()))
        serving = self.store.health.healthy
        await self._set_health(serving)
        self._started = True
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
        self._stopping = True
        await self._set_health(False)
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

    async def _ticker(self) -> None:
        while True:
            await asyncio.sleep(self.config.evaluation_interval)
            try:
                await self.pipeline.tick()
            except asyncio.CancelledError:
                raise
            except StoreUnavailable as exc:
                # Expected while the store is locked or full: the health status says so,
                # the store logs the transition once and the committer counts failures.
                log.debug("evaluation tick skipped: store unavailable", extra={"error": str(exc)})
            except Exception:
                # The loop must survive anything; the failure is logged and counted.
                self.metrics.evaluation_errors.inc()
                log.exception("evaluation tick failed")
            now = self.clock()
            if not self.store.health.healthy and now >= self._next_probe:
                await self._probe_store(now)
            await self._set_health(self.store.health.healthy)

    def _ensure_enrollment_token(self, customer: str, token: str, now: float) -> None:
        with self.store.transaction() as conn:
            enrollment.ensure_token(conn, customer, token, now)

    async def _probe_store(self, now: float) -> None:
        """Write the probe row; a success marks the store healthy (Store.health)."""
        self._next_probe = now + STORE_PROBE_INTERVAL
        try:
            await asyncio.to_thread(self.store.probe, now)
        except StoreUnavailable:
            self.metrics.store_probes.labels("failed").inc()
        else:
            self.metrics.store_probes.labels("ok").inc()
        self.metrics.store_healthy.set(1 if self.store.health.healthy else 0)

    def _store_health_changed(self, healthy: bool) -> None:
        """In the loop, right when a transaction changes the store's health: gRPC health
        follows at once rather than at the next tick."""
        self.metrics.store_healthy.set(1 if healthy else 0)
        self.metrics.store_health_changes.labels("healthy" if healthy else "unhealthy").inc()
        if self._server is not None and not self._stopping:
            # The state now, not `healthy`: several changes may be queued, the last one wins.
            task = asyncio.ensure_future(self._set_health(self.store.health.healthy))
            self._health_tasks.add(task)
            task.add_done_callback(self._health_tasks.discard)

    async def _set_health(self, serving: bool) -> None:
        status = (
            health_pb2.HealthCheckResponse.SERVING
            if serving
            else health_pb2.HealthCheckResponse.NOT_SERVING
        )
        await self._health.set("", status)
        await self._health.set(SERVICE_NAME, status)

    def _ready(self) -> tuple[bool, str]:
        if not self._started:
            return False, "starting"
        health = self.store.health
        if not health.healthy:
            return False, health.reason
        deliverer = getattr(self, "deliverer", None)
        if deliverer is not None and deliverer.problems():
            return False, "; ".join(deliverer.problems())
        return True, "ready"

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

    async def _count_tickets(self) -> None:
        """Keep the ticket counts /metrics shows current, off the loop (collector.ticketcounts)."""
        while True:
            await asyncio.sleep(self.config.evaluation_interval)
            try:
                await asyncio.to_thread(self.ticket_counts.refresh, self.clock())
            except asyncio.CancelledError:
                raise
            except StoreUnavailable as exc:
                # the counts stay as they were; store health reports the outage
                log.debug("ticket counts not refreshed", extra={"error": str(exc)})
            except Exception:
                # The loop must survive anything; the old counts stay, the failure is
                # logged and counted.
                self.metrics.ticket_count_errors.inc()
                log.exception("ticket count refresh failed")


class _EmbeddedUvicorn(uvicorn.Server):
    """uvicorn inside our loop: the collector owns signal handling, not uvicorn."""

    def install_signal_handlers(self) -> None:
        pass

    @contextlib.contextmanager
    def capture_signals(self):  # type: ignore[no-untyped-def]
        yield


def _tls_mode(files: tls.ServerFiles | None) -> str:
    if files is None:
        return "off (plaintext)"
    return "mutual" if files.client_ca is not None else "server"


def _bracket(host: str) -> str:
    return f"[{host}]" if ":" in host else host


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
