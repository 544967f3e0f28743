"""The agent process: collect on a schedule, spool every report, stream the spool.

Collection and sending are decoupled by the spool: a collection always lands on disk
first, whether or not the collector is reachable.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import replace
from datetime import UTC, datetime

from apscheduler.schedulers.asyncio import AsyncIOScheduler

from tripline.agent import convert, tls
from tripline.agent.config import AgentConfig
from tripline.agent.identity import Identity
from tripline.agent.inventory import inventory as read_inventory
from tripline.agent.prober_setup import prober_for
from tripline.agent.samples import Collection, Sample
from tripline.agent.snapshot import Snapshotter
from tripline.agent.spool import Spool
from tripline.agent.transport import Transport
from tripline.common import files
from tripline.common.backoff import Backoff
from tripline.v1 import tripline_pb2 as pb

log = logging.getLogger(__name__)

# A collector cannot ask for collections more often than this.
MIN_INTERVAL = 1.0


class AgentRunner:
    def __init__(self, config: AgentConfig, clock: Callable[[], float] = time.time) -> None:
        self.config = config
        self.clock = clock
        # The state holds the credential and reports with host details: owner-only.
        files.private_dir(config.state_dir, "state_dir")
        identity_path = config.state_dir / "identity.json"
        files.private_if_exists(identity_path, "state_dir")
        self.spool = Spool(config.state_dir / "spool.db", max_bytes=config.spool_max_bytes)
        self.prober = prober_for(config)
        self.snapshotter = Snapshotter(self.prober)
        self.interval = config.interval
        self.inventory_interval = config.inventory_interval
        self._inventory = read_inventory()
        self._inventory_sent_at = 0.0
        self.scheduler = AsyncIOScheduler(timezone=UTC)
        self.transport = Transport(
            target=config.collector,
            spool=self.spool,
            identity_path=identity_path,
            enrollment_token=config.enrollment_token,
            site=config.site,
            host_info=self._host_info,
            on_settings=self._apply_settings,
            on_identity=self._learn_identity,
            on_snapshot_request=self._snapshot_request,
            # validity is judged by the wall clock, as the TLS handshake does
            credentials=tls.agent_channel_credentials(config, time.time()),
            max_message_bytes=config.max_message_bytes,
            keepalive=(config.keepalive_time, config.keepalive_timeout),
            backoff=Backoff(config.backoff_initial, config.backoff_max),
            clock=clock,
        )

    def _learn_identity(self, ident: Identity) -> None:
        # Enrolled just now: the new credential is redacted from the next collection on.
        self.prober.redaction = self.prober.redaction.with_secrets(ident.credential)

    def _snapshot_request(self, request_id: str) -> Awaitable[pb.Snapshot] | None:
        if not self.snapshotter.accept():
            return None

        async def answer() -> pb.Snapshot:
            return convert.snapshot_pb(request_id, await self.snapshotter.take())

        return answer()

    def _host_info(self) -> pb.HostInfo:
        return convert.host_info(self._inventory, self.config.tags)

    def _apply_settings(self, settings: pb.Settings) -> None:
        interval = max(MIN_INTERVAL, settings.interval_seconds or self.interval)
        if interval != self.interval:
            log.info("collection interval changed", extra={"interval_seconds": interval})
            self.interval = interval
            if self.scheduler.get_job("collect") is not None:
                self.scheduler.reschedule_job("collect", trigger="interval", seconds=interval)
        if settings.inventory_interval_seconds > 0:
            self.inventory_interval = settings.inventory_interval_seconds

    def _self_samples(self) -> tuple[Sample, ...]:
        stats = self.spool.stats()
        t = self.transport.stats
        return (
            Sample("agent_spool_reports", (), float(stats.reports)),
            Sample("agent_spool_bytes", (), float(stats.bytes)),
            Sample("agent_spool_dropped_reports_total", (), float(stats.dropped_total)),
            Sample("agent_reconnects_total", (), float(t.reconnects)),
            Sample("agent_reports_rejected_total", (), float(t.reports_rejected)),
            *(
                Sample("agent_snapshots_total", (("result", result),), float(count))
                for result, count in (
                    ("answered", self.snapshotter.stats.answered),
                    ("refused", self.snapshotter.stats.refused),
                    ("failed", self.snapshotter.stats.failed),
                )
            ),
        )

    def collect_once(self) -> int:
        """Collect, write one report to the spool, return its seq (runs in a thread)."""
        now = self.clock()
        collection: Collection = self.prober.collect(now)
        collection = replace(collection, samples=collection.samples + self._self_samples())
        inventory = None
        if now - self._inventory_sent_at >= self.inventory_interval:
            self._inventory = read_inventory()
            inventory = self._inventory
            self._inventory_sent_at = now
        return self.spool.append(
            lambda seq, dropped: convert.report_bytes(
                collection,
                instance_id=self.spool.instance_id,
                seq=seq,
                dropped_total=dropped,
                inventory=inventory,
            )
        )

    async def _collect_job(self) -> None:
        seq = await asyncio.to_thread(self.collect_once)
        log.debug("collected", extra={"seq": seq})
        self.transport.notify()

    async def run(self, stop: asyncio.Event) -> None:
        self.scheduler.add_job(
            self._collect_job,
            "interval",
            seconds=self.interval,
            id="collect",
            next_run_time=datetime.now(UTC),
            max_instances=1,
            coalesce=True,
            misfire_grace_time=None,
        )
        self.scheduler.start()
        stats = self.spool.stats()
        log.info(
            "agent started",
            extra={
                "collector": self.config.collector,
                "state_dir": str(self.config.state_dir),
                "instance_id": self.spool.instance_id,
                "spooled_reports": stats.reports,
                "interval_seconds": self.interval,
            },
        )
        try:
            await self.transport.run(stop)
        finally:
            self.scheduler.shutdown(wait=False)
            self.spool.close()
