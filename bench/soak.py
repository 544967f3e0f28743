"""Soak: N simulated agents for M minutes with random disconnects, then count lost and
duplicated seqs and compare the collector's memory at the start and the end.

The collector runs as its own process (SQLite in a temporary data dir, or
``--database-url``). Each simulated agent keeps an in-memory spool of unacknowledged
reports, as the real agent keeps a durable one: it drops its stream at random, keeps
collecting while disconnected, and on reconnect resends everything past the Welcome's
``applied_seq``. At the end every agent drains its spool; then each agent's last seq is
compared with its ``agent_instances`` row: ``applied_seq`` short of the last seq is a
lost report, ``reports_applied`` above ``applied_seq`` a report applied twice.

    python -m bench.soak --agents 500 --minutes 5 --interval 5
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import random
import shutil
import sys
import tempfile
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from grpc import aio
from sqlalchemy import create_engine, text

if __package__ in (None, ""):  # run as `python bench/soak.py`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.collectorproc import CollectorProcess, scrape
from bench.fakehost import FakeHost
from bench.procstat import MIB, Sampler, snapshot
from bench.simagent import CONNECT_METHOD, RPC_TIMEOUT, channel_options
from tripline.v1 import tripline_pb2 as pb
from tripline.v1 import tripline_pb2_grpc as pb_grpc

TOKEN = "tle_soak_WWBUjJXFCaKNGkk8mKUE_tK7NA1IThonitw5bzzf2Z0"
MAX_AGENTS = 5_000
MAX_MINUTES = 120.0
DRAIN_SECONDS = 60.0  # after the run, how long agents get to empty their spools
STREAM_ERRORS = (aio.AioRpcError, asyncio.InvalidStateError, ConnectionError, TimeoutError)


class SoakAgent:
    """A simulated agent with an in-memory spool of unacknowledged reports."""

    def __init__(self, host: FakeHost, channel: aio.Channel, rng: random.Random) -> None:
        self.host = host
        self.rng = rng
        self.stub = pb_grpc.CollectorStub(channel)
        self.connect_rpc = channel.stream_stream(
            CONNECT_METHOD,
            request_serializer=None,  # reports are serialized once, when collected
            response_deserializer=pb.CollectorMessage.FromString,
        )
        self.instance_id = uuid.uuid4().hex
        self.agent_id = ""
        self.credential = ""
        self.spool: dict[int, bytes] = {}  # seq -> serialized AgentMessage, ascending
        self.last_seq = 0
        self.acked = 0
        self.call: Any = None
        self.reader: asyncio.Task[None] | None = None
        self.drops = 0  # streams this agent dropped on purpose
        self.broken = 0  # streams that ended otherwise
        self.resent = 0  # reports written more than once
        self.written = 0  # the highest seq written to any stream

    async def enroll(self) -> None:
        response = await self.stub.Enroll(
            pb.EnrollRequest(enrollment_token=TOKEN, host=self.host.host), timeout=RPC_TIMEOUT
        )
        self.agent_id = response.agent_id
        self.credential = response.credential

    async def connect(self) -> None:
        """Open a stream; resend every spooled report the collector has not applied."""
        call = self.connect_rpc(metadata=(("authorization", f"Bearer {self.credential}"),))
        hello = pb.Hello(
            agent_version="soak",
            instance_id=self.instance_id,
            host=self.host.host,
            sent_at_seconds=time.time(),
        )
        try:
            await call.write(pb.AgentMessage(hello=hello).SerializeToString())
            first = await asyncio.wait_for(call.read(), RPC_TIMEOUT)
            if first is aio.EOF or first.WhichOneof("kind") != "welcome":
                raise ConnectionError(f"no Welcome for {self.agent_id}: {first!r}")
            self._ack(first.welcome.applied_seq)
            for seq in sorted(self.spool):
                payload = self.spool.get(seq)
                if payload is not None:
                    await call.write(payload)
                    self.resent += seq <= self.written
                    self.written = max(self.written, seq)
        except BaseException:
            call.cancel()
            raise
        self.call = call
        self.reader = asyncio.create_task(self._read(call))

    def _ack(self, seq: int) -> None:
        for spooled in [s for s in self.spool if s <= seq]:
            del self.spool[spooled]
        self.acked = max(self.acked, seq)

    async def _read(self, call: Any) -> None:
        with contextlib.suppress(*STREAM_ERRORS):
            while True:
                message = await call.read()
                if message is aio.EOF:
                    break
                if message.WhichOneof("kind") == "ack":
                    self._ack(message.ack.seq)
        if self.call is call:  # not a drop of ours: the stream broke
            self.broken += 1
            self.call = None

    def drop(self) -> None:
        call, self.call = self.call, None
        if call is not None:
            self.drops += 1
            call.cancel()

    def collect(self, now: float, elapsed: float) -> None:
        self.last_seq += 1
        self.spool[self.last_seq] = self.host.collect(
            instance_id=self.instance_id, seq=self.last_seq, now=now, elapsed=elapsed
        )

    async def send_or_reconnect(self) -> bool:
        """Write the newest report, reconnecting (and resending the spool) if need be."""
        try:
            if self.call is None:
                await self.connect()
            else:
                await self.call.write(self.spool[self.last_seq])
                self.written = self.last_seq
        except STREAM_ERRORS:
            self.call = None
            return False
        return True

    async def run(self, deadline: float, interval: float, drop_probability: float) -> None:
        next_at = time.time() + self.rng.uniform(0, interval)
        last = next_at - interval
        retry_at = 0.0
        while next_at < deadline:
            await asyncio.sleep(max(0.0, next_at - time.time()))
            now = time.time()
            self.collect(now, now - last)
            last = now
            connected = self.call is not None
            if (connected or now >= retry_at) and not await self.send_or_reconnect():
                retry_at = now + self.rng.uniform(0.5, interval)
            if self.call is not None and self.rng.random() < drop_probability:
                self.drop()  # collected reports wait in the spool until the reconnect
                retry_at = now + self.rng.uniform(0, 2 * interval)
            next_at += interval

    async def drain(self, deadline: float) -> None:
        while self.spool and time.time() < deadline:
            if self.call is None:
                with contextlib.suppress(*STREAM_ERRORS):
                    await self.connect()
            await asyncio.sleep(0.2)

    async def close(self) -> None:
        call, self.call = self.call, None
        if call is not None:
            with contextlib.suppress(*STREAM_ERRORS):
                await call.done_writing()
            call.cancel()
        if self.reader is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self.reader


@dataclass(frozen=True)
class Verdict:
    agents: int
    reports: int  # seqs the agents collected
    applied: int  # reports_applied summed over agent_instances
    lost: int  # seqs never applied
    duplicated: int  # seqs applied more than once
    unacked: int  # reports still in the agents' spools after the drain


def verdict(agents: Sequence[SoakAgent], database_url: str) -> Verdict:
    engine = create_engine(database_url)
    try:
        with engine.connect() as conn:
            rows = {
                (row.agent_id, row.instance_id): (int(row.applied_seq), int(row.reports_applied))
                for row in conn.execute(
                    text(
                        "SELECT agent_id, instance_id, applied_seq, reports_applied "
                        "FROM agent_instances"
                    )
                )
            }
    finally:
        engine.dispose()
    lost = duplicated = applied = 0
    for agent in agents:
        applied_seq, reports_applied = rows.get((agent.agent_id, agent.instance_id), (0, 0))
        applied += reports_applied
        lost += max(0, agent.last_seq - applied_seq) + max(0, applied_seq - reports_applied)
        duplicated += max(0, reports_applied - applied_seq)
    return Verdict(
        agents=len(agents),
        reports=sum(a.last_seq for a in agents),
        applied=applied,
        lost=lost,
        duplicated=duplicated,
        unacked=sum(len(a.spool) for a in agents),
    )


async def soak(args: argparse.Namespace, collector: CollectorProcess) -> dict[str, Any]:
    rng = random.Random(args.seed)
    started = time.time()
    channels = [
        aio.insecure_channel(collector.target, options=channel_options(4 * 2**20))
        for _ in range(math.ceil(args.agents / args.agents_per_channel))
    ]
    agents = [
        SoakAgent(
            FakeHost(n, random.Random(args.seed * 7_919 + n), started),
            channels[n // args.agents_per_channel],
            random.Random(rng.random()),
        )
        for n in range(args.agents)
    ]
    limit = asyncio.Semaphore(64)

    async def enroll(agent: SoakAgent) -> None:
        async with limit:
            await agent.enroll()

    await asyncio.gather(*(enroll(a) for a in agents))
    idle = snapshot(collector.pid)
    sampler = Sampler(collector.pid, period=1.0).start()
    duration = args.minutes * 60
    deadline = time.time() + duration
    # Mean seconds between one agent's drops -> chance of a drop after each report.
    drop_probability = min(1.0, args.interval / args.drop_every)
    runs = asyncio.gather(*(a.run(deadline, args.interval, drop_probability) for a in agents))
    # "Start" is after two intervals: every agent connected and reporting.
    await asyncio.sleep(min(2 * args.interval, duration / 2))
    start = snapshot(collector.pid)
    trajectory: list[tuple[float, float]] = []
    while not runs.done():
        await asyncio.sleep(min(60.0, duration / 5))
        trajectory.append(
            (round(time.time() - started), round(snapshot(collector.pid).rss_bytes / MIB, 1))
        )
    await runs
    end = snapshot(collector.pid)
    drain_deadline = time.time() + DRAIN_SECONDS
    await asyncio.gather(*(a.drain(drain_deadline) for a in agents))
    await asyncio.gather(*(a.close() for a in agents))
    for channel in channels:
        await channel.close()
    sampler.stop()
    page = scrape(f"{collector.http}/metrics")
    result = verdict(agents, args.store_url)
    return {
        "agents": args.agents,
        "minutes": args.minutes,
        "interval": args.interval,
        "drop_every": args.drop_every,
        "reports": result.reports,
        "applied": result.applied,
        "lost": result.lost,
        "duplicated": result.duplicated,
        "unacked_after_drain": result.unacked,
        "drops": sum(a.drops for a in agents),
        "broken_streams": sum(a.broken for a in agents),
        "resent": sum(a.resent for a in agents),
        "collector_duplicates": page.value("tripline_collector_reports_duplicate_total"),
        "rss_idle_mib": round(idle.rss_bytes / MIB, 1),
        "rss_start_mib": round(start.rss_bytes / MIB, 1),
        "rss_end_mib": round(end.rss_bytes / MIB, 1),
        "rss_max_mib": round(sampler.max_rss / MIB, 1),
        "rss_trajectory_mib": trajectory,
    }


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.soak", description=__doc__.split("\n")[0])
    p.add_argument("--agents", type=int, default=500, help="simulated agents (default 500)")
    p.add_argument("--minutes", type=float, default=5.0, help="run time (default 5)")
    p.add_argument("--interval", type=float, default=5.0, help="report interval (default 5 s)")
    p.add_argument(
        "--drop-every",
        type=float,
        default=60.0,
        help="mean seconds between one agent's stream drops (default 60)",
    )
    p.add_argument("--agents-per-channel", type=int, default=100)
    p.add_argument("--database-url", help="collector store URL instead of SQLite")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--json", action="store_true", help="also print one line of JSON")
    args = p.parse_args(argv)
    if not 1 <= args.agents <= MAX_AGENTS:
        p.error(f"--agents must be 1..{MAX_AGENTS}")
    if not 0 < args.minutes <= MAX_MINUTES:
        p.error(f"--minutes must be in (0, {MAX_MINUTES:g}]")
    if args.interval < 1 or args.drop_every <= 0:
        p.error("--interval must be at least 1 s and --drop-every positive")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    workdir = Path(tempfile.mkdtemp(prefix="tripline-soak-"))
    extra = ("--database-url", args.database_url) if args.database_url else ()
    collector = CollectorProcess(workdir / "collector", TOKEN, args.interval, extra=extra)
    args.store_url = args.database_url or f"sqlite:///{collector.database}"
    try:
        collector.start()
        figures = asyncio.run(soak(args, collector))
        figures["collector_exit"] = collector.stop()
    finally:
        collector.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    f = figures
    print(
        f"agents {f['agents']}, {f['minutes']:g} min, interval {f['interval']:g} s, "
        f"a drop every {f['drop_every']:g} s per agent"
    )
    print(
        f"streams dropped {f['drops']}, broken {f['broken_streams']}, reports resent "
        f"{f['resent']}, collector duplicates {f['collector_duplicates']:.0f}"
    )
    print(
        f"seqs collected {f['reports']}, applied {f['applied']}, lost {f['lost']}, "
        f"duplicated {f['duplicated']}, unacknowledged after drain {f['unacked_after_drain']}"
    )
    print(
        f"collector RSS MiB: idle {f['rss_idle_mib']}, start {f['rss_start_mib']}, "
        f"end {f['rss_end_mib']}, max {f['rss_max_mib']}; over time {f['rss_trajectory_mib']}"
    )
    if args.json:
        print("json: " + json.dumps(figures))
    ok = f["lost"] == 0 and f["duplicated"] == 0 and f["collector_exit"] == 0
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
