"""gRPC transport: enroll once, then keep one Connect stream and drain the spool into it.

Delivery is at-least-once: reports leave the spool only when the collector acknowledges
them, and after any break the agent resends everything after the collector's
``applied_seq``. The collector drops seqs it has already applied, so in effect each
report counts once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import grpc
from grpc import aio

from tripline.agent.channel import RETRYABLE, open_channel
from tripline.agent.enroll import load_or_enroll
from tripline.agent.identity import Identity
from tripline.agent.interning import SeriesInterner
from tripline.agent.replay import Replay
from tripline.agent.spool import Spool
from tripline.common.backoff import Backoff
from tripline.v1 import tripline_pb2 as pb
from tripline.v1 import tripline_pb2_grpc as pb_grpc

log = logging.getLogger(__name__)

if TYPE_CHECKING:
    Call = aio.StreamStreamCall[pb.AgentMessage, pb.CollectorMessage]

AGENT_VERSION = "0.1.0"
MAX_IN_FLIGHT = 32


@dataclass
class TransportStats:
    connects: int = 0
    disconnects: int = 0
    reports_sent: int = 0
    reports_acked: int = 0
    reports_rejected: int = 0
    last_error: str = ""
    connected: bool = False
    acked_seq: int = 0
    # Series definitions sent in series tables (one per series per stream); 0 while the
    # collector offers no table or interning is off.
    series_defined: int = 0

    @property
    def reconnects(self) -> int:
        """Streams established after the first: the first connect is not a reconnect."""
        return max(self.connects - 1, 0)


class Transport:
    def __init__(
        self,
        *,
        target: str,
        spool: Spool,
        identity_path: Path,
        enrollment_token: str | None,
        site: str,
        host_info: Callable[[], pb.HostInfo],
        on_settings: Callable[[pb.Settings], None],
        on_identity: Callable[[Identity], None] | None = None,
        on_snapshot_request: Callable[[str], Awaitable[pb.Snapshot] | None] | None = None,
        credentials: grpc.ChannelCredentials | None,
        max_message_bytes: int = 4 * 2**20,
        keepalive: tuple[float, float] = (30.0, 10.0),
        backoff: Backoff | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        clock: Callable[[], float] = time.time,
        intern_series: bool = True,
    ) -> None:
        self.target = target
        # False: always send named samples (the wire form of agents before series tables).
        self.intern_series = intern_series
        self.spool = spool
        self.identity_path = identity_path
        self.enrollment_token = enrollment_token
        self.site = site
        self.host_info = host_info
        self.on_settings = on_settings
        self.on_identity = on_identity  # called once the agent has enrolled
        # Asked for a diagnostic snapshot: returns what answers it, or None to ignore the
        # request (busy, too soon). The request names nothing to run.
        self.on_snapshot_request = on_snapshot_request
        # None means plaintext, which only an explicit `plaintext: true` config asks for
        self.credentials = credentials
        self.max_message_bytes = max_message_bytes
        self.keepalive = keepalive  # (ping after idle seconds, answer timeout seconds)
        self.backoff = backoff or Backoff(0.5, 60.0)
        self.sleep = sleep
        self.clock = clock
        self.stats = TransportStats()
        self._replay: Replay | None = None
        self._new_data = asyncio.Event()
        self._acked = asyncio.Event()
        # Reports and snapshot answers share the stream; gRPC allows one write at a time.
        self._write_lock = asyncio.Lock()
        self._snapshot_tasks: set[asyncio.Task[None]] = set()

    def notify(self) -> None:
        """A new report is in the spool."""
        self._new_data.set()

    async def run(self, stop: asyncio.Event) -> None:
        """Connect, stream, reconnect; return when ``stop`` is set."""
        channel = open_channel(
            self.target, self.credentials, self.max_message_bytes, self.keepalive
        )
        async with channel:
            stub = pb_grpc.CollectorStub(channel)
            ident = await load_or_enroll(
                stub,
                stop,
                path=self.identity_path,
                token=self.enrollment_token,
                site=self.site,
                host_info=self.host_info,
                backoff=self.backoff,
                on_identity=self.on_identity,
            )
            if ident is None:
                return
            while not stop.is_set():
                delay = await self._stream_once(stub, ident, stop)
                if stop.is_set():
                    return
                log.info("reconnecting", extra={"in_seconds": round(delay, 2)})
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), delay)

    async def _stream_once(
        self, stub: pb_grpc.CollectorAsyncStub, ident: Identity, stop: asyncio.Event
    ) -> float:
        """One Connect stream from Hello to its end; returns the delay before the next."""
        call = stub.Connect(metadata=(("authorization", f"Bearer {ident.credential}"),))
        sender: asyncio.Task[None] | None = None
        stopper = asyncio.create_task(stop.wait())
        try:
            await call.write(
                pb.AgentMessage(
                    hello=pb.Hello(
                        agent_version=AGENT_VERSION,
                        instance_id=self.spool.instance_id,
                        host=self.host_info(),
                        sent_at_seconds=self.clock(),
                    )
                )
            )
            first = await call.read()
            # read() answers a message or aio.EOF (the stubs cannot narrow on `is EOF`)
            if not isinstance(first, pb.CollectorMessage) or first.WhichOneof("kind") != "welcome":
                raise _ProtocolError("the collector did not answer Hello with Welcome")
            welcome = first.welcome
            acked = welcome.applied_seq
            await asyncio.to_thread(self.spool.ack, acked)
            self.stats.acked_seq = acked
            self.on_settings(welcome.settings)
            self.stats.connects += 1
            self.stats.connected = True
            self.backoff.reset()
            log.info(
                "connected",
                extra={"collector": self.target, "agent_id": ident.agent_id, "applied_seq": acked},
            )
            stats = await asyncio.to_thread(self.spool.stats)
            self._replay = Replay.start(acked, stats.newest_seq or acked)
            # A collector offering a series table gets each series named once per stream;
            # an older one (0) gets named samples as before.
            limit = welcome.series_table_max if self.intern_series else 0
            interner = SeriesInterner(limit) if limit > 0 else None
            sender = asyncio.create_task(self._send(call, acked, interner))
            reader = asyncio.create_task(self._read(call))
            done, _ = await asyncio.wait(
                {sender, reader, stopper}, return_when=asyncio.FIRST_COMPLETED
            )
            if stopper in done:
                return 0.0
            for task in done:
                task.result()  # surface an RPC error raised inside a task
            # The collector ended the stream cleanly (e.g. shutting down): reconnect.
            self.stats.disconnects += 1
            return self.backoff.next()
        except aio.AioRpcError as exc:
            return await self._handle_error(exc)
        except _ProtocolError as exc:
            self.stats.last_error = str(exc)
            log.error("protocol error", extra={"error": str(exc)})
            return self.backoff.next()
        finally:
            self.stats.connected = False
            stopper.cancel()
            if sender is not None:
                sender.cancel()
            for task in list(self._snapshot_tasks):
                task.cancel()
            call.cancel()

    async def _handle_error(self, exc: aio.AioRpcError) -> float:
        code = exc.code()
        details = exc.details() or ""
        self.stats.disconnects += 1
        self.stats.last_error = f"{code.name}: {details}"
        delay = self.backoff.next()
        trailers = dict(exc.trailing_metadata() or ())
        if "retry-after" in trailers:
            with contextlib.suppress(ValueError):
                delay = max(delay, float(trailers["retry-after"]))
        if code == grpc.StatusCode.INVALID_ARGUMENT and "tripline-rejected-seq" in trailers:
            # A report the collector can never accept must not block the ones behind it.
            seq = int(trailers["tripline-rejected-seq"])
            await asyncio.to_thread(self.spool.ack, seq)
            self.stats.reports_rejected += 1
            log.error(
                "report rejected by the collector, dropped", extra={"seq": seq, "error": details}
            )
            return 0.0
        level = logging.WARNING if code in RETRYABLE else logging.ERROR
        if code == grpc.StatusCode.UNAUTHENTICATED:
            delay = self.backoff.maximum
            details += f" (delete {self.identity_path} to enroll again)"
        log.log(level, "stream ended", extra={"code": code.name, "error": details})
        return delay

    async def _send(self, call: Call, after: int, interner: SeriesInterner | None = None) -> None:
        # The spool is read here on the event loop, not in a worker thread: a read of a few
        # indexed rows costs less than the hand-off to a thread and back (bench/README.md).
        last_sent = after
        while True:
            # Cleared before the spool is read: a report spooled or an ack read after the
            # read sets them again. Both are set on this loop and nothing below awaits
            # before the read, so nothing can slip in between.
            self._new_data.clear()
            self._acked.clear()
            room = MAX_IN_FLIGHT - (last_sent - self.stats.acked_seq)
            batch = self.spool.pending(last_sent, room) if room > 0 else []
            for seq, payload in batch:
                report = pb.Report.FromString(payload)
                if interner is not None:
                    self.stats.series_defined += interner.intern(report)
                async with self._write_lock:
                    await call.write(pb.AgentMessage(report=report))
                last_sent = seq
                self.stats.reports_sent += 1
            if batch:
                continue  # more may have been spooled, or acked, while these were written
            waiters = {asyncio.ensure_future(self._acked.wait())}
            if room > 0:
                waiters.add(asyncio.ensure_future(self._new_data.wait()))
            _, pending = await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
            for waiter in pending:
                waiter.cancel()

    async def _read(self, call: Call) -> None:
        while True:
            message = await call.read()
            if not isinstance(message, pb.CollectorMessage):  # aio.EOF: the stream ended
                return
            kind = message.WhichOneof("kind")
            if kind == "ack":
                seq = message.ack.seq
                # On the loop: an ack is not synced to disk on its own (Spool.ack), so it is
                # a small write, cheaper than a hand-off to a worker thread.
                deleted = self.spool.ack(seq)
                self.stats.reports_acked += deleted
                self.stats.acked_seq = max(self.stats.acked_seq, seq)
                self._acked.set()
                if self._replay is not None:
                    self._replay = self._replay.progress(seq)
            elif kind == "settings":
                self.on_settings(message.settings)
            elif kind == "snapshot_request":
                self._start_snapshot(call, message.snapshot_request.request_id)
            # Any other kind (a newer collector's message) is ignored: old agents must
            # stay harmless when the protocol grows.

    def _start_snapshot(self, call: Call, request_id: str) -> None:
        if self.on_snapshot_request is None:
            return
        answer = self.on_snapshot_request(request_id)
        if answer is None:
            log.info("snapshot request ignored: one is being taken or was just taken")
            return
        # Measured off the reading task, so acks are read while the span elapses.
        task = asyncio.create_task(self._answer_snapshot(call, request_id, answer))
        self._snapshot_tasks.add(task)
        task.add_done_callback(self._snapshot_tasks.discard)

    async def _answer_snapshot(
        self, call: Call, request_id: str, answer: Awaitable[pb.Snapshot]
    ) -> None:
        try:
            snapshot = await answer
            async with self._write_lock:
                await call.write(pb.AgentMessage(snapshot=snapshot))
        except (aio.AioRpcError, aio.UsageError, asyncio.InvalidStateError) as exc:
            # The stream ended meanwhile: the collector asks again if it still needs one.
            log.info("snapshot not sent: stream ended", extra={"error": str(exc)})
            return
        except Exception:
            # A bug in measuring must not end the stream: counted by the snapshotter.
            log.exception("snapshot failed", extra={"request_id": request_id[:64]})
            return
        log.info(
            "snapshot sent",
            extra={"request_id": request_id[:64], "processes": len(snapshot.top_cpu)},
        )


class _ProtocolError(Exception):
    pass
