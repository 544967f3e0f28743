"""Simulated agents for the load generator: enroll, one Connect stream each, report, time acks.

One generator process runs many agents on one asyncio loop. By default each agent has
its own gRPC channel, so its own TCP connection and TLS session, verifying the server's
certificate against the benchmark's CA: the shape of a real fleet, where every PC dials
the collector itself. ``agents_per_channel`` > 1 multiplexes agents on one connection and
``root_certificates=None`` dials in plaintext, both for comparison. Connections open at
``ramp_per_second`` (first RPC of each channel) so thousands of handshakes do not land at
once. A simulated agent speaks the real protocol (Enroll, Hello, Welcome, Reports,
cumulative Acks) but keeps no spool: a report lost with a broken stream is counted, not
resent.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import queue
import random
import time
import uuid
from dataclasses import dataclass, field
from multiprocessing.queues import Queue
from typing import Any

import grpc
from grpc import aio

from bench import procstat
from bench.fakehost import FakeHost
from bench.latency import Histogram
from tripline.v1 import tripline_pb2 as pb
from tripline.v1 import tripline_pb2_grpc as pb_grpc

CONNECT_METHOD = "/tripline.v1.Collector/Connect"
RPC_TIMEOUT = 120.0
# Acks still outstanding this long after the agents stop sending count as lost.
ACK_GRACE = 10.0


@dataclass(frozen=True)
class WorkerSpec:
    """One generator process's share of the agents (numbers first .. first+count-1)."""

    index: int
    target: str
    token: str
    first: int
    count: int
    interval: float
    full: frozenset[int]  # agent numbers that cross the filesystem threshold
    agents_per_channel: int = 1
    wire: str = "table"  # "table": intern series per stream when offered; "named"
    concurrency: int = 64  # enrollments and stream openings in flight
    # PEM CA the server's certificate must chain to; None dials in plaintext
    root_certificates: bytes | None = None
    # name to verify the certificate against when it is not the target's host
    server_name: str | None = None
    ramp_per_second: float = 0.0  # new connections per second; 0: as fast as they go
    seed: int = 1
    max_message_bytes: int = 4 * 2**20


@dataclass(frozen=True)
class Plan:
    """Wall-clock times (unix seconds) shared by every generator process."""

    go: float  # first reports start at go + a random offset within one interval
    measure_from: float  # acks of reports sent from here on are measured
    measure_until: float
    deadline: float  # stop sending at the latest here, even without a stop command


@dataclass
class Stats:
    sent: int = 0  # reports sent within the measured window
    acked: int = 0  # of those, acknowledged
    samples_acked: int = 0
    sent_total: int = 0
    stream_errors: int = 0
    reconnects: int = 0
    lost: int = 0  # sent but never acknowledged
    latency: Histogram = field(default_factory=Histogram)

    def as_dict(self) -> dict[str, Any]:
        return {
            "sent": self.sent,
            "acked": self.acked,
            "samples_acked": self.samples_acked,
            "sent_total": self.sent_total,
            "stream_errors": self.stream_errors,
            "reconnects": self.reconnects,
            "lost": self.lost,
            "latency": {
                "counts": self.latency.counts,
                "n": self.latency.n,
                "total": self.latency.total,
                "maximum": self.latency.maximum,
            },
        }


def channel_options(
    max_message_bytes: int, server_name: str | None = None
) -> list[tuple[str, Any]]:
    options: list[tuple[str, Any]] = [
        # Without this, channels with equal arguments share one TCP connection.
        ("grpc.use_local_subchannel_pool", 1),
        ("grpc.max_send_message_length", max_message_bytes),
        ("grpc.max_receive_message_length", max_message_bytes),
        ("grpc.keepalive_time_ms", 30_000),
        ("grpc.keepalive_timeout_ms", 10_000),
    ]
    if server_name is not None:
        options.append(("grpc.ssl_target_name_override", server_name))
    return options


def open_channel(spec: WorkerSpec) -> aio.Channel:
    """One channel (one TCP connection, opened at its first RPC) as ``spec`` says."""
    options = channel_options(spec.max_message_bytes, spec.server_name)
    if spec.root_certificates is None:
        return aio.insecure_channel(spec.target, options=options)
    # Each channel gets its own credentials object, as each PC has its own: gRPC keeps
    # no TLS session cache unless told to, so every connection is a full handshake.
    credentials = grpc.ssl_channel_credentials(root_certificates=spec.root_certificates)
    return aio.secure_channel(spec.target, credentials, options=options)


class SimAgent:
    def __init__(
        self,
        host: FakeHost,
        channel: aio.Channel,
        stats: Stats,
        rng: random.Random,
        crosses: bool,
        intern: bool = True,
    ) -> None:
        self.host = host
        self.intern = intern
        # True once the stream's table holds this PC's series (a new stream defines
        # them again in its first report); None: named samples on this stream.
        self.table_defined: bool | None = None
        self.stub = pb_grpc.CollectorStub(channel)
        # Reports go out pre-serialized (bytes pass through a None serializer).
        self.connect_rpc = channel.stream_stream(
            CONNECT_METHOD,
            request_serializer=None,
            response_deserializer=pb.CollectorMessage.FromString,
        )
        self.stats = stats
        self.rng = rng
        self.crosses = crosses
        self.instance_id = uuid.uuid4().hex
        self.agent_id = ""
        self.credential = ""
        self.seq = 0
        self.samples = len(host.report.samples)
        self.call: Any = None
        self.reader: asyncio.Task[None] | None = None
        # seq -> (monotonic send time, inside the measured window); seqs ascend
        self.pending: dict[int, tuple[float, bool]] = {}
        self.closing = False

    async def enroll(self, token: str) -> None:
        response = await self.stub.Enroll(
            pb.EnrollRequest(
                enrollment_token=token, host=self.host.host, site=f"site-{self.host.number % 20}"
            ),
            timeout=RPC_TIMEOUT,
        )
        self.agent_id = response.agent_id
        self.credential = response.credential

    async def connect(self) -> None:
        call = self.connect_rpc(
            metadata=(("authorization", f"Bearer {self.credential}"),), timeout=None
        )
        hello = pb.Hello(
            agent_version="bench",
            instance_id=self.instance_id,
            host=self.host.host,
            sent_at_seconds=time.time(),
        )
        await call.write(pb.AgentMessage(hello=hello).SerializeToString())
        first = await asyncio.wait_for(call.read(), RPC_TIMEOUT)
        if first is aio.EOF or first.WhichOneof("kind") != "welcome":
            call.cancel()
            raise ConnectionError(f"no Welcome for {self.agent_id}: {first!r}")
        self.seq = max(self.seq, first.welcome.applied_seq)
        offered = first.welcome.series_table_max >= self.samples
        self.table_defined = False if self.intern and offered else None
        self.pending.clear()
        self.call = call
        self.reader = asyncio.create_task(self._read(call))

    async def _read(self, call: Any) -> None:
        try:
            while True:
                message = await call.read()
                if message is aio.EOF:
                    break
                if message.WhichOneof("kind") != "ack":
                    continue  # settings pushed by the collector
                now = time.monotonic()
                acked = message.ack.seq
                while self.pending:
                    seq = next(iter(self.pending))
                    if seq > acked:
                        break
                    sent_at, measured = self.pending.pop(seq)
                    if measured:
                        self.stats.acked += 1
                        self.stats.samples_acked += self.samples
                        self.stats.latency.add(now - sent_at)
        except (aio.AioRpcError, asyncio.InvalidStateError):
            pass
        finally:
            if not self.closing:
                self.stats.stream_errors += 1
            self.stats.lost += len(self.pending)
            self.pending.clear()
            if self.call is call:
                self.call = None

    async def run(
        self, plan: Plan, interval: float, stop: asyncio.Event, events: Queue[Any]
    ) -> None:
        """Report every ``interval`` from a random offset until stopped or the deadline."""
        next_at = plan.go + self.rng.uniform(0, interval)
        last = next_at - interval
        while True:
            delay = next_at - time.time()
            if delay > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), delay)
            if stop.is_set() or time.time() >= plan.deadline:
                break
            now = time.time()
            if self.call is None:
                try:
                    self.stats.reconnects += 1
                    await self.connect()
                except (aio.AioRpcError, ConnectionError, TimeoutError):
                    next_at += interval
                    continue
            crossing = self.crosses and not self.host.full and now >= plan.measure_from
            if crossing:
                self.host.full = True
            self.seq += 1
            payload = self.host.collect(
                instance_id=self.instance_id,
                seq=self.seq,
                now=now,
                elapsed=now - last,
                table=self.table_defined,
            )
            if self.table_defined is False:
                self.table_defined = True
            last = now
            measured = plan.measure_from <= now < plan.measure_until
            self.pending[self.seq] = (time.monotonic(), measured)
            try:
                await self.call.write(payload)
            except (aio.AioRpcError, asyncio.InvalidStateError, AttributeError):
                # the reader saw the stream end (and counted it); reconnect next time
                self.call = None
            else:
                self.stats.sent_total += 1
                self.stats.sent += measured
                if crossing:
                    events.put(("crossed", self.agent_id, now))
            next_at += interval

    async def close(self) -> None:
        """Half-close the stream, wait for the last acks, then end it."""
        self.closing = True
        call, reader = self.call, self.reader
        if call is None or reader is None:
            return
        with contextlib.suppress(aio.AioRpcError, asyncio.InvalidStateError):
            await call.done_writing()
        try:
            await asyncio.wait_for(asyncio.shield(reader), ACK_GRACE)
        except TimeoutError:
            call.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reader


async def _bounded(concurrency: asyncio.Semaphore, coroutine: Any, not_before: float = 0.0) -> None:
    delay = not_before - time.monotonic()
    if delay > 0:
        await asyncio.sleep(delay)
    async with concurrency:
        await coroutine


async def _receive(control: Queue[Any]) -> tuple[Any, ...]:
    # Polled, not a blocking get in an executor thread: asyncio.run waits for those at exit.
    while True:
        try:
            return tuple(control.get_nowait())
        except queue.Empty:
            await asyncio.sleep(0.05)


async def run_worker(spec: WorkerSpec, events: Queue[Any], control: Queue[Any]) -> None:
    """Enroll and connect this worker's agents, report when told to, then send stats."""
    stats = Stats()
    rng = random.Random(spec.seed * 1_000_003 + spec.index)
    started = time.time()
    channels = [open_channel(spec) for _ in range(math.ceil(spec.count / spec.agents_per_channel))]
    agents = [
        SimAgent(
            FakeHost(number, random.Random(spec.seed * 7_919 + number), started),
            channels[offset // spec.agents_per_channel],
            stats,
            random.Random(rng.random()),
            number in spec.full,
            intern=spec.wire == "table",
        )
        for offset, number in enumerate(range(spec.first, spec.first + spec.count))
    ]
    concurrency = asyncio.Semaphore(spec.concurrency)
    t0 = time.monotonic()
    # The first agent of each channel makes its connection (and TLS handshake) with its
    # Enroll: the ramp spaces those out by channel.
    step = 1.0 / spec.ramp_per_second if spec.ramp_per_second > 0 else 0.0
    results = await asyncio.gather(
        *(
            _bounded(
                concurrency,
                a.enroll(spec.token),
                t0 + step * (offset // spec.agents_per_channel),
            )
            for offset, a in enumerate(agents)
        ),
        return_exceptions=True,
    )
    failures = [r for r in results if isinstance(r, BaseException)]
    agents = [a for a, r in zip(agents, results, strict=True) if not isinstance(r, BaseException)]
    enrolled = time.monotonic() - t0
    t0 = time.monotonic()
    # An agent whose stream did not open retries at its first report, like a real agent.
    results = await asyncio.gather(
        *(_bounded(concurrency, a.connect()) for a in agents), return_exceptions=True
    )
    failures += [r for r in results if isinstance(r, BaseException)]
    events.put(
        (
            "ready",
            spec.index,
            {
                "agents": len(agents),
                "channels": len(channels),
                "enroll_seconds": enrolled,
                "connect_seconds": time.monotonic() - t0,
                "failures": len(failures),
                "first_failure": repr(failures[0]) if failures else "",
            },
        )
    )

    plan: Plan = (await _receive(control))[1]
    stop = asyncio.Event()

    async def wait_stop() -> None:
        await _receive(control)
        stop.set()

    stopper = asyncio.create_task(wait_stop())
    await asyncio.gather(*(a.run(plan, spec.interval, stop, events) for a in agents))
    await asyncio.gather(*(a.close() for a in agents))
    stopper.cancel()
    for channel in channels:
        await channel.close()
    events.put(("result", spec.index, stats.as_dict()))


def worker_entry(spec: WorkerSpec, events: Queue[Any], control: Queue[Any]) -> None:
    """Process entry point (multiprocessing, spawn)."""
    procstat.raise_nofile_limit()  # one socket per channel
    try:
        asyncio.run(run_worker(spec, events, control))
    except (grpc.RpcError, ConnectionError, TimeoutError, OSError) as exc:
        events.put(("failed", spec.index, f"{type(exc).__name__}: {exc}"))
