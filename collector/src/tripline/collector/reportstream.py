"""One Connect stream after its Hello: the reader that applies reports in order and
queues an Ack for each, and the outgoing queue the stream's handler writes from.

The reader is the hot path of the collector (every report of every agent passes here):
rate limit before decoding, decode against the stream's series table, cap new series,
apply (which returns only once the report's effects are committed), then queue the Ack,
so an Ack always follows what made its report durable. Settings pushes, snapshot
requests and aborts go through the same queue, so one writer writes the stream.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

import grpc
from google.protobuf.message import DecodeError
from grpc import aio

from tripline.collector import convert, limits, snapshotconv
from tripline.collector.config import CollectorConfig
from tripline.collector.pipeline import Pipeline
from tripline.collector.selfmetrics import CollectorMetrics
from tripline.collector.seriestable import SeriesTable
from tripline.collector.sessions import ReportTimeRefused, Session
from tripline.collector.store import AgentRevoked, StoreUnavailable
from tripline.v1 import tripline_pb2 as pb

# The servicer's logger: these lines were the servicer's before the split, and log
# filters and tests select them by logger name.
log = logging.getLogger("tripline.collector.server")

# Agents wait at least this long before resending after UNAVAILABLE from a busy store.
RETRY_AFTER_SECONDS = "5"


@dataclass(frozen=True)
class Abort:
    """End the stream with this status (sent through the writer, like any message)."""

    code: grpc.StatusCode
    details: str
    trailers: tuple[tuple[str, str], ...] = ()


# Ends the stream normally (the reader saw the client finish).
END = object()


def undecodable(exc: DecodeError) -> str:
    # Invalid UTF-8 in a string field is the usual cause: protobuf refuses it at parse.
    return (
        f"message is not a valid tripline.v1.AgentMessage ({exc}); nothing from it was "
        "applied: check the agent's version and that label values are valid UTF-8"
    )


class Stream:
    """The outgoing side of one Connect stream: the handler is its only writer.

    A list and one waiter rather than an ``asyncio.Queue``: a queue holds four deques
    (about 2.5 KiB) for its whole life, once per connected PC, where this needs one
    reader, no bound and no task accounting.
    """

    __slots__ = ("_items", "_waiter")

    def __init__(self) -> None:
        self._items: list[object] = []
        self._waiter: asyncio.Future[None] | None = None

    def send(self, item: object) -> None:
        self._items.append(item)
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def next(self) -> object:
        """The oldest item sent and not yet taken, waiting for one (one reader only)."""
        while not self._items:
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        return self._items.pop(0)


class ReportReader:
    """Reads one agent's stream after its Hello; shared by every stream of a servicer."""

    def __init__(
        self,
        pipeline: Pipeline,
        config: CollectorConfig,
        metrics: CollectorMetrics,
        rate: limits.ReportRateLimiter,
        monotonic: Callable[[], float],
    ) -> None:
        self.pipeline = pipeline
        self.config = config
        self.metrics = metrics
        self.rate = rate
        self._monotonic = monotonic

    async def run(
        self,
        requests: AsyncIterator[pb.AgentMessage],
        session: Session,
        stream: Stream,
        table: SeriesTable | None = None,
    ) -> None:
        capped_logged = False
        try:
            async for message in requests:
                kind = message.WhichOneof("kind")
                if kind == "snapshot":
                    # Answers count against the agent's message budget like reports, so
                    # a flood of them costs as little as a flood of reports.
                    try:
                        self.rate.take(session.agent.agent_id, self._monotonic())
                    except limits.RateLimited as exc:
                        self.metrics.limit_hits.labels("reports_per_second").inc()
                        self.metrics.snapshots.labels("rate_limited").inc()
                        stream.send(
                            Abort(
                                grpc.StatusCode.RESOURCE_EXHAUSTED,
                                "snapshots and reports arrive faster than "
                                f"max_reports_per_second_per_agent={self.rate.rate:g} "
                                f"(burst {self.rate.burst}); reconnect after {exc.retry_after}s",
                                (("retry-after", str(exc.retry_after)),),
                            )
                        )
                        return
                    await self._snapshot(session, message.snapshot)
                    continue
                if kind != "report":
                    self.metrics.reports_rejected.labels("failed_precondition").inc()
                    stream.send(
                        Abort(
                            grpc.StatusCode.FAILED_PRECONDITION,
                            "Hello sent twice on one stream"
                            if kind == "hello"
                            else "empty AgentMessage: set hello or report",
                        )
                    )
                    return
                try:
                    # Before decoding: a flood must cost the collector as little as possible.
                    self.rate.take(session.agent.agent_id, self._monotonic())
                except limits.RateLimited as exc:
                    self.metrics.limit_hits.labels("reports_per_second").inc()
                    self.metrics.reports_rejected.labels("resource_exhausted").inc()
                    log.warning(
                        "report rate limited",
                        extra={"agent_id": exc.agent_id, "retry_after": exc.retry_after},
                    )
                    stream.send(
                        Abort(
                            grpc.StatusCode.RESOURCE_EXHAUSTED,
                            f"report seq {message.report.seq} not applied: this agent sends "
                            "more than max_reports_per_second_per_agent="
                            f"{self.rate.rate:g} (burst {self.rate.burst}); "
                            f"resend after {exc.retry_after}s",
                            (("retry-after", str(exc.retry_after)),),
                        )
                    )
                    return
                try:
                    report = convert.decode_report(
                        message.report,
                        instance_id=session.instance_id,
                        max_samples=self.config.max_samples_per_report,
                        table=table,
                    )
                except convert.InvalidMessage as exc:
                    self.metrics.reports_rejected.labels(exc.reason).inc()
                    log.warning(
                        "report rejected",
                        extra={
                            "agent_id": session.agent.agent_id,
                            "reason": exc.reason,
                            "error": str(exc),
                        },
                    )
                    trailers = (("tripline-rejected-seq", str(exc.seq)),) if exc.seq else ()
                    stream.send(Abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc), trailers))
                    return
                capped = limits.cap_series(
                    session.live.series, report.samples, self.config.max_series_per_agent
                )
                if capped.dropped:
                    report = dataclasses.replace(report, samples=capped.samples)
                try:
                    # Revocation is checked in the transaction applying each report, so
                    # a revoked agent is refused on its next message, not only at connect.
                    applied = await self.pipeline.apply(session, report)
                except AgentRevoked:
                    self.metrics.reports_rejected.labels("unauthenticated").inc()
                    log.warning("revoked agent refused", extra={"agent_id": session.agent.agent_id})
                    stream.send(
                        Abort(
                            grpc.StatusCode.UNAUTHENTICATED,
                            "agent credential revoked: re-enroll the agent",
                        )
                    )
                    return
                except ReportTimeRefused as exc:
                    self.metrics.reports_rejected.labels(exc.reason).inc()
                    log.warning(
                        "report rejected",
                        extra={"agent_id": session.agent.agent_id, "error": str(exc)},
                    )
                    # The trailer makes the agent drop this report and go on with the next,
                    # after a reconnect that measures its clock offset again.
                    stream.send(
                        Abort(
                            grpc.StatusCode.INVALID_ARGUMENT,
                            str(exc),
                            (("tripline-rejected-seq", str(exc.seq)),),
                        )
                    )
                    return
                except StoreUnavailable:
                    stream.send(
                        Abort(
                            grpc.StatusCode.UNAVAILABLE,
                            "store unavailable: report not applied, resend later",
                            (("retry-after", RETRY_AFTER_SECONDS),),
                        )
                    )
                    return
                if applied and capped.dropped:
                    self.metrics.limit_hits.labels("series_per_agent").inc()
                    self.metrics.series_dropped.inc(capped.dropped)
                    if not capped_logged:  # once per stream: the agent sends it every report
                        capped_logged = True
                        log.warning(
                            "new series dropped: agent at max_series_per_agent",
                            extra={
                                "agent_id": session.agent.agent_id,
                                "limit": self.config.max_series_per_agent,
                                "dropped": capped.dropped,
                            },
                        )
                stream.send(pb.CollectorMessage(ack=pb.Ack(seq=report.seq)))
                # Not kept while waiting for the next report (up to an interval): the
                # decoded samples are the agent's in the live state already.
                del message, report, capped
        except asyncio.CancelledError:
            raise
        except (aio.AioRpcError, aio.AbortError):
            # The client went away mid-read, or the handler already aborted this stream
            # (superseded by the agent's reconnect, or refused): a routine end, and the
            # handler ends the stream.
            pass
        except DecodeError as exc:
            self.metrics.reports_rejected.labels("invalid_argument").inc()
            log.warning(
                "undecodable message", extra={"agent_id": session.agent.agent_id, "error": str(exc)}
            )
            stream.send(Abort(grpc.StatusCode.INVALID_ARGUMENT, undecodable(exc)))
            return
        except Exception:
            # Keep serving everyone else; this stream ends and the agent reconnects.
            log.exception("stream failed", extra={"agent_id": session.agent.agent_id})
            self.metrics.evaluation_errors.inc()
            stream.send(Abort(grpc.StatusCode.INTERNAL, "internal error; see collector log"))
            return
        stream.send(END)

    async def _snapshot(self, session: Session, message: pb.Snapshot) -> None:
        """An answer to a snapshot request. A bad one is refused and counted; the stream
        goes on, since reports matter more than the snapshot."""
        agent_id = session.agent.agent_id
        try:
            request_id, data = snapshotconv.decode_snapshot(message)
        except convert.InvalidMessage as exc:
            self.metrics.snapshots.labels("invalid").inc()
            log.warning("snapshot rejected", extra={"agent_id": agent_id, "error": str(exc)})
            return
        await self.pipeline.snapshot_arrived(agent_id, request_id, data)
