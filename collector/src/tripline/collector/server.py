"""The gRPC servicer: enrollment, and each Connect stream up to its Hello.

Each Connect stream has one writer (this handler) draining an outgoing queue, and one
reader task (reportstream.py) that applies reports in order and queues acks, so settings
can be pushed and an older stream of the same agent closed without two tasks writing at
once.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import logging
import math
import time
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING, Any

import grpc
from google.protobuf.message import DecodeError
from grpc import aio

from tripline.collector import (
    agents_store,
    convert,
    limits,
    reportstream,
    throttle,
    tls,
)
from tripline.collector.config import CollectorConfig
from tripline.collector.enrollment import enroll_agent
from tripline.collector.pipeline import Pipeline
from tripline.collector.reportstream import (
    END,
    RETRY_AFTER_SECONDS,
    Abort,
    Stream,
)
from tripline.collector.selfmetrics import CollectorMetrics
from tripline.collector.seriestable import SeriesTable
from tripline.collector.store import AgentRecord, EnrollmentRefused, StoreUnavailable
from tripline.v1 import tripline_pb2 as pb
from tripline.v1 import tripline_pb2_grpc as pb_grpc

log = logging.getLogger(__name__)

if TYPE_CHECKING:
    # The servicer's context whatever the RPC's messages: the handlers abort, read the
    # metadata and the peer, and (Connect) read and write.
    Context = aio.ServicerContext[Any, Any]


class CollectorService(pb_grpc.CollectorServicer):
    def __init__(
        self,
        pipeline: Pipeline,
        config: CollectorConfig,
        metrics: CollectorMetrics,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.pipeline = pipeline
        self.config = config
        self.metrics = metrics
        self.streams: dict[str, Stream] = {}
        self.monotonic = monotonic
        self.rate = limits.ReportRateLimiter(
            config.max_reports_per_second_per_agent, config.max_report_burst_per_agent
        )
        self.connects = limits.KeyedRateLimiter(
            config.max_connects_per_second_per_peer, config.max_connect_burst_per_peer
        )
        self.hellos = limits.KeyedRateLimiter(
            config.max_hellos_per_second_per_agent, config.max_hello_burst_per_agent
        )
        self._refusal_log = limits.LogThrottle(every=10.0)
        # Through a lambda: a test may replace `monotonic` on the servicer.
        self.reader = reportstream.ReportReader(
            pipeline, config, metrics, self.rate, lambda: self.monotonic()
        )
        self.enroll_throttle = throttle.FailureThrottle()

    def settings(self) -> pb.Settings:
        return pb.Settings(
            interval_seconds=self.config.interval,
            inventory_interval_seconds=self.config.inventory_interval,
            collect_processes=True,
        )

    async def _throttled(self, scope: str, key: str, context: Context) -> None:
        """Refuse the attempt with RESOURCE_EXHAUSTED while `key` must wait after failures."""
        wait = self.enroll_throttle.wait((scope, key), self.monotonic())
        if wait <= 0:
            return
        self.metrics.enrollments.labels("throttled").inc()
        self.metrics.enrollments_throttled.labels(scope).inc()
        retry_after = str(math.ceil(wait))
        await context.abort(
            grpc.StatusCode.RESOURCE_EXHAUSTED,
            f"too many failed enrollments from this {scope}: try again in {retry_after}s",
            trailing_metadata=(("retry-after", retry_after),),
        )

    def _enroll_failed(self, peer: str, token_key: str | None, **extra: object) -> None:
        now = self.monotonic()
        delay = self.enroll_throttle.failed(("address", peer), now)
        if token_key is not None:
            delay = max(delay, self.enroll_throttle.failed(("token", token_key), now))
        # One line per failure until the throttle bites, then one per wait imposed.
        log.warning("enrollment refused", extra={"peer": peer, "throttled_for": delay, **extra})

    async def Enroll(self, request: pb.EnrollRequest, context: Context) -> pb.EnrollResponse:
        # Guessing is slowed per peer address (and per token for a known one refused):
        # refused attempts cost a growing wait, answered without looking the token up.
        peer = limits.peer_host(context.peer() or "")
        await self._throttled("address", peer, context)
        token_key = hashlib.sha256(request.enrollment_token.encode()).hexdigest()[:16]
        await self._throttled("token", token_key, context)
        try:
            enrollment = convert.decode_enroll(request)
        except convert.InvalidMessage as exc:
            self._enroll_failed(peer, None, reason=exc.reason)
            self.metrics.enrollments.labels("invalid").inc()
            self.metrics.reports_rejected.labels(exc.reason).inc()
            log.warning("enrollment rejected", extra={"reason": exc.reason, "error": str(exc)})
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        hostname = enrollment.hostname
        try:
            agent, credential = await asyncio.to_thread(
                self.pipeline.store.run_write,
                functools.partial(
                    enroll_agent,
                    token=enrollment.token,
                    hostname=hostname,
                    site=enrollment.site,
                    inventory=enrollment.host,
                    tags=enrollment.tags,
                    now=self.pipeline.clock(),
                ),
            )
        except EnrollmentRefused as exc:
            self.metrics.enrollments.labels("refused").inc()
            self._enroll_failed(
                peer,
                None if exc.token_id is None else token_key,
                host=hostname[:253],
                customer=exc.customer,
                reason=exc.reason,
            )
            await context.abort(
                grpc.StatusCode.UNAUTHENTICATED, f"enrollment refused: {exc.reason}"
            )
        except StoreUnavailable:
            await context.abort(grpc.StatusCode.UNAVAILABLE, "store unavailable, retry later")
        self.metrics.enrollments.labels("ok").inc()
        self.pipeline.liveness.enrolled(agent, self.pipeline.clock())
        log.info(
            "agent enrolled",
            extra={"agent_id": agent.agent_id, "customer": agent.customer, "host": hostname},
        )
        return pb.EnrollResponse(
            agent_id=agent.agent_id, credential=credential, customer=agent.customer
        )

    async def Connect(  # type: ignore[override]  # reads and writes through context, yields nothing
        self,
        request_iterator: AsyncIterator[pb.AgentMessage],
        context: Context,
    ) -> None:
        # The first message is read before the credential is judged: a refusal sent while
        # an asyncio client is still writing its Hello reaches it as INTERNAL instead of
        # UNAUTHENTICATED (grpc/grpc#36066), and the agent would not know why.
        undecodable: DecodeError | None = None
        try:
            first = await asyncio.wait_for(anext(request_iterator), self.config.hello_timeout)
        except (TimeoutError, StopAsyncIteration):
            first = None
        except DecodeError as exc:
            first, undecodable = None, exc
        # Per peer address before the credential is looked up: a flood of new streams
        # costs a dict lookup, not a store read.
        peer = limits.peer_host(context.peer() or "")
        await self._throttle(
            context,
            self.connects,
            peer,
            "connects_per_peer",
            "peer",
            "max_connects_per_second_per_peer",
        )
        agent = await self._authenticate(context)
        await self._throttle(
            context,
            self.hellos,
            agent.agent_id,
            "hellos_per_agent",
            "agent_id",
            "max_hellos_per_second_per_agent",
        )
        if undecodable is not None:
            self.metrics.reports_rejected.labels("invalid_argument").inc()
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT, reportstream.undecodable(undecodable)
            )
        if first is None:
            self.metrics.reports_rejected.labels("failed_precondition").inc()
            await context.abort(
                grpc.StatusCode.DEADLINE_EXCEEDED,
                f"no Hello within {self.config.hello_timeout:g}s of opening the stream",
            )
        if first.WhichOneof("kind") != "hello":
            self.metrics.reports_rejected.labels("failed_precondition").inc()
            await context.abort(
                grpc.StatusCode.FAILED_PRECONDITION,
                "the first message on Connect must be Hello, got "
                f"{first.WhichOneof('kind') or 'an empty message'}",
            )
        try:
            hello = convert.decode_hello(first.hello)
        except convert.InvalidMessage as exc:
            self.metrics.reports_rejected.labels(exc.reason).inc()
            log.warning(
                "hello rejected",
                extra={"agent_id": agent.agent_id, "reason": exc.reason, "error": str(exc)},
            )
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        if len(self.streams) >= self.config.max_streams and agent.agent_id not in self.streams:
            # A reconnect replacing the agent's own stream adds none, so it always passes.
            self.metrics.limit_hits.labels("streams").inc()
            self.metrics.reports_rejected.labels("resource_exhausted").inc()
            log.warning("stream refused: collector full", extra={"agent_id": agent.agent_id})
            await context.abort(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"this collector serves its limit of {self.config.max_streams} agent streams "
                "(max_streams): the agent retries later; add a collector behind the load "
                "balancer or raise max_streams",
                trailing_metadata=(("retry-after", RETRY_AFTER_SECONDS),),
            )
        try:
            session = await self.pipeline.open_session(agent, hello)
        except StoreUnavailable:
            await context.abort(
                grpc.StatusCode.UNAVAILABLE,
                "store unavailable, retry later",
                trailing_metadata=(("retry-after", RETRY_AFTER_SECONDS),),
            )
        # This frame lives as long as the stream (days): keep only what the session holds.
        del first, hello
        stream = Stream()
        older = self.streams.get(agent.agent_id)
        if older is not None:
            older.send(
                Abort(grpc.StatusCode.ALREADY_EXISTS, "superseded by a newer stream of this agent")
            )
        self.streams[agent.agent_id] = stream

        def ask_snapshot(request_id: str) -> None:
            stream.send(
                pb.CollectorMessage(snapshot_request=pb.SnapshotRequest(request_id=request_id))
            )

        self.pipeline.snapshots.attach(agent.agent_id, ask_snapshot)
        session.live.connected = True
        self.metrics.streams_open.inc()
        reader: asyncio.Task[None] | None = None
        # From here on the slot is held: every way out (the Welcome write failing, the
        # client cancelling before it, an abort) must pass the finally that frees it.
        try:
            log.info(
                "agent connected",
                extra={
                    "agent_id": agent.agent_id,
                    "customer": agent.customer,
                    "instance_id": session.instance_id,
                    "applied_seq": session.applied_seq,
                    "peer": context.peer(),
                },
            )
            await context.write(
                pb.CollectorMessage(
                    welcome=pb.Welcome(
                        agent_id=agent.agent_id,
                        customer=agent.customer,
                        site=agent.site,
                        settings=self.settings(),
                        applied_seq=session.applied_seq,
                        series_table_max=self.config.max_series_per_agent,
                    )
                )
            )
            # The series table is the stream's own: a reconnect starts an empty one.
            limit = self.config.max_series_per_agent
            table = SeriesTable(limit) if limit > 0 else None
            reader = asyncio.create_task(self.reader.run(request_iterator, session, stream, table))
            while True:
                item = await stream.next()
                if item is END:
                    return
                if isinstance(item, Abort):
                    await context.abort(item.code, item.details, trailing_metadata=item.trailers)
                await context.write(item)
        finally:
            if reader is not None:
                reader.cancel()
            self.pipeline.snapshots.detach(agent.agent_id, ask_snapshot)
            self.metrics.streams_open.dec()
            if self.streams.get(agent.agent_id) is stream:
                del self.streams[agent.agent_id]
                session.live.connected = False
            log.info("agent disconnected", extra={"agent_id": agent.agent_id})

    async def _throttle(
        self,
        context: Context,
        bucket: limits.KeyedRateLimiter,
        key: str,
        limit: str,
        field: str,
        setting: str,
    ) -> None:
        """Take a token of ``key``'s bucket or end the stream with RESOURCE_EXHAUSTED."""
        try:
            bucket.take(key, self.monotonic())
        except limits.RateLimited as exc:
            self.metrics.limit_hits.labels(limit).inc()
            self.metrics.reports_rejected.labels("resource_exhausted").inc()
            # keyed by limit only: keys come from clients and must not grow the throttle
            swallowed = self._refusal_log.allow(limit, self.monotonic())
            if swallowed is not None:
                log.warning(
                    "new stream rate limited",
                    extra={
                        "limit": limit,
                        field: key,
                        "retry_after": exc.retry_after,
                        "suppressed": swallowed,
                    },
                )
            await context.abort(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"too many new streams from this {'address' if field == 'peer' else 'agent'} "
                f"({setting}={bucket.rate:g}, burst {bucket.burst}); "
                f"reconnect after {exc.retry_after}s",
                trailing_metadata=(("retry-after", str(exc.retry_after)),),
            )

    async def _authenticate(self, context: Context) -> AgentRecord:
        credential = ""
        for key, value in context.invocation_metadata() or ():
            if key == "authorization" and isinstance(value, str) and value.startswith("Bearer "):
                credential = value[len("Bearer ") :]
        if not credential:
            self.metrics.reports_rejected.labels("unauthenticated").inc()
            await context.abort(
                grpc.StatusCode.UNAUTHENTICATED,
                "missing 'authorization: Bearer <agent credential>' metadata; enroll first",
            )
        try:
            agent = await asyncio.to_thread(
                self.pipeline.store.run_read, lambda c: agents_store.authenticate(c, credential)
            )
        except StoreUnavailable:
            await context.abort(grpc.StatusCode.UNAVAILABLE, "store unavailable, retry later")
        if agent is None:
            self.metrics.reports_rejected.labels("unauthenticated").inc()
            await context.abort(
                grpc.StatusCode.UNAUTHENTICATED,
                "agent credential unknown or revoked: re-enroll the agent",
            )
        if self.config.tls_client_ca is not None:
            # Mutual TLS: the certificate must be issued to this very agent, so a copied
            # credential is useless without the private key of that agent's certificate.
            names = tls.peer_identities(context.auth_context())
            if agent.agent_id not in names:
                self.metrics.reports_rejected.labels("unauthenticated").inc()
                log.warning(
                    "client certificate does not match the agent",
                    extra={"agent_id": agent.agent_id, "certificate_names": sorted(names)},
                )
                await context.abort(
                    grpc.StatusCode.UNAUTHENTICATED,
                    f"the client certificate (CN/SAN: {', '.join(sorted(names)) or 'none'}) is "
                    f"not issued to agent {agent.agent_id}: give this agent a certificate "
                    "whose CN or a SAN is its agent id",
                )
        return agent
