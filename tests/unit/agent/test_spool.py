from __future__ import annotations

import signal
import sqlite3
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tripline.agent.spool import Spool, SpoolError, SpoolStats


def fixed(data: bytes) -> Callable[[int, int], bytes]:
    return lambda seq, dropped: data


@pytest.fixture
def spool(tmp_path: Path) -> Iterator[Spool]:
    s = Spool(tmp_path / "spool.db")
    yield s
    s.close()


def test_seqs_start_at_one_and_pending_returns_them_in_order(spool: Spool) -> None:
    seqs = [spool.append(lambda seq, dropped: f"report {seq}".encode()) for _ in range(5)]
    assert seqs == [1, 2, 3, 4, 5]
    assert spool.pending() == [(i, f"report {i}".encode()) for i in seqs]
    assert spool.pending(after_seq=3) == [(4, b"report 4"), (5, b"report 5")]
    assert spool.pending(after_seq=1, limit=2) == [(2, b"report 2"), (3, b"report 3")]
    assert spool.pending(after_seq=5) == []


def test_build_receives_seq_and_dropped_total(spool: Spool) -> None:
    seen: list[tuple[int, int]] = []

    def build(seq: int, dropped: int) -> bytes:
        seen.append((seq, dropped))
        return b"x"

    spool.append(build)
    spool.append(build)
    assert seen == [(1, 0), (2, 0)]


def test_ack_deletes_up_to_seq_and_seqs_are_never_reused(tmp_path: Path) -> None:
    path = tmp_path / "spool.db"
    with Spool(path) as spool:
        for _ in range(4):
            spool.append(fixed(b"abc"))
        assert spool.ack(2) == 2
        assert [seq for seq, _ in spool.pending()] == [3, 4]
        assert spool.ack(2) == 0
        assert spool.ack(100) == 2
        assert spool.pending() == []
        assert spool.stats() == SpoolStats(0, 0, None, None, 0)
        assert spool.append(fixed(b"abc")) == 5
    with Spool(path) as reopened:
        assert reopened.append(fixed(b"abc")) == 6
        assert [seq for seq, _ in reopened.pending()] == [5, 6]


def test_instance_id_persists_and_a_new_file_is_a_new_instance(tmp_path: Path) -> None:
    with Spool(tmp_path / "a.db") as a:
        first = a.instance_id
    with Spool(tmp_path / "a.db") as again:
        assert again.instance_id == first
    with Spool(tmp_path / "b.db") as other:
        assert other.instance_id != first
    assert len(first) == 32 and int(first, 16) >= 0


def test_oldest_reports_are_dropped_past_max_bytes(tmp_path: Path) -> None:
    path = tmp_path / "spool.db"
    with Spool(path, max_bytes=100) as spool:
        for _ in range(4):
            spool.append(fixed(b"x" * 30))  # 120 bytes: the first must go
        assert [seq for seq, _ in spool.pending()] == [2, 3, 4]
        assert spool.stats() == SpoolStats(3, 90, 2, 4, 1)
        seen: list[int] = []

        def build(seq: int, dropped: int) -> bytes:
            seen.append(dropped)
            return b"y" * 50

        spool.append(build)
        assert seen == [1]
        # 140 bytes: drop 2 (110), then 3 (80)
        assert [seq for seq, _ in spool.pending()] == [4, 5]
        assert spool.stats().dropped_total == 3
    with Spool(path, max_bytes=100) as reopened:
        assert reopened.stats() == SpoolStats(2, 80, 4, 5, 3)


def test_a_report_larger_than_the_spool_is_kept_alone(tmp_path: Path) -> None:
    with Spool(tmp_path / "small.db", max_bytes=10) as small:
        small.append(fixed(b"a"))
        small.append(fixed(b"b"))
        seq = small.append(fixed(b"z" * 50))
        assert small.pending() == [(seq, b"z" * 50)]
        assert small.stats() == SpoolStats(1, 50, 3, 3, 2)


def test_a_failing_build_stores_nothing_and_uses_no_seq(spool: Spool) -> None:
    spool.append(fixed(b"one"))

    def broken(seq: int, dropped: int) -> bytes:
        raise RuntimeError("encoder bug")

    with pytest.raises(RuntimeError):
        spool.append(broken)
    assert spool.append(fixed(b"two")) == 2
    assert spool.stats() == SpoolStats(2, 6, 1, 2, 0)


def test_file_is_wal_with_full_sync(spool: Spool) -> None:
    spool.append(fixed(b"x"))
    raw = sqlite3.connect(spool.path)
    assert raw.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    raw.close()
    # synchronous is per connection: read the spool's own.
    assert spool._db.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL


def test_an_ack_is_not_synced_alone_and_appends_still_are(spool: Spool) -> None:
    # An ack runs on the agent's event loop: no fsync of its own (a lost ack only means a
    # resend the collector drops by seq); the next append's FULL sync carries it.
    spool.append(fixed(b"x"))
    statements: list[str] = []
    spool._db.set_trace_callback(statements.append)
    assert spool.ack(1) == 1
    spool._db.set_trace_callback(None)
    begin = statements.index("BEGIN IMMEDIATE")
    assert statements[:begin] == ["PRAGMA synchronous = NORMAL"]
    assert statements[-1] == "PRAGMA synchronous = FULL"
    seen: list[int] = []
    spool.append(lambda seq, dropped: seen.append(_synchronous(spool)) or b"y")
    assert seen == [2]  # FULL while the report is written
    assert spool.stats().reports == 1 and spool.pending() == [(2, b"y")]


def _synchronous(spool: Spool) -> int:
    return int(spool._db.execute("PRAGMA synchronous").fetchone()[0])


@pytest.mark.parametrize(
    "content",
    [b"this is not a database at all" * 100, b"SQLite format 3\x00" + b"\xff" * 4000],
)
def test_a_corrupt_file_raises_spool_error_with_the_path(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "spool.db"
    path.write_bytes(content)
    with pytest.raises(SpoolError) as err:
        Spool(path)
    assert err.value.path == path
    assert str(path) in str(err.value)


def test_a_damaged_page_is_found_on_open(tmp_path: Path) -> None:
    path = tmp_path / "spool.db"
    with Spool(path) as spool:
        for _ in range(50):
            spool.append(fixed(b"p" * 3000))
    raw = sqlite3.connect(path)
    raw.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    raw.close()
    data = bytearray(path.read_bytes())
    page = 4096
    data[5 * page : 7 * page] = b"\x07" * (2 * page)  # scribble over two b-tree pages
    path.write_bytes(bytes(data))
    with pytest.raises(SpoolError):
        Spool(path)


def test_use_after_close_raises_spool_error(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool.db")
    spool.close()
    with pytest.raises(SpoolError):
        spool.stats()


def test_rejects_non_positive_max_bytes(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="max_bytes"):
        Spool(tmp_path / "spool.db", max_bytes=0)


def test_can_move_between_threads(spool: Spool) -> None:
    with ThreadPoolExecutor(max_workers=1) as pool:
        assert pool.submit(spool.append, fixed(b"from a worker")).result() == 1
    assert spool.append(fixed(b"from main")) == 2
    done = threading.Thread(target=spool.ack, args=(1,))
    done.start()
    done.join()
    assert spool.pending() == [(2, b"from main")]


@settings(max_examples=40, deadline=None)
@given(
    ops=st.lists(
        st.one_of(
            st.tuples(st.just("append"), st.integers(min_value=0, max_value=80)),
            st.tuples(st.just("ack"), st.integers(min_value=0, max_value=40)),
        ),
        max_size=40,
    )
)
def test_matches_a_simple_model(
    tmp_path_factory: pytest.TempPathFactory, ops: list[tuple[str, int]]
) -> None:
    max_bytes = 200
    model: list[tuple[int, bytes]] = []
    next_seq, dropped = 1, 0
    with Spool(tmp_path_factory.mktemp("model") / "s.db", max_bytes=max_bytes) as spool:
        for op, n in ops:
            if op == "append":
                data = bytes([next_seq % 256]) * n
                assert spool.append(fixed(data)) == next_seq
                model.append((next_seq, data))
                next_seq += 1
                while sum(len(d) for _, d in model) > max_bytes and len(model) > 1:
                    model.pop(0)
                    dropped += 1
            else:
                gone = [m for m in model if m[0] <= n]
                assert spool.ack(n) == len(gone)
                model = [m for m in model if m[0] > n]
            assert spool.pending(limit=1000) == model
            stats = spool.stats()
            assert stats.bytes == sum(len(d) for _, d in model)
            assert stats.reports == len(model)
            assert stats.dropped_total == dropped
            assert stats.oldest_seq == (model[0][0] if model else None)


WRITER = """
import sys
from pathlib import Path
from tripline.agent.spool import Spool
spool = Spool(Path(sys.argv[1]), max_bytes=int(sys.argv[2]))
n = 0
while True:
    seq = spool.append(lambda seq, dropped: b"%d:" % seq + b"r" * 700)
    n += 1
    if n % 7 == 0:
        spool.ack(seq - 20)
    print(seq, flush=True)
"""


@pytest.mark.skipif(sys.platform == "win32", reason="SIGKILL is POSIX")
@pytest.mark.parametrize("max_bytes", [10_000, 64 * 2**20])
def test_survives_sigkill_at_any_point(tmp_path: Path, max_bytes: int) -> None:
    path = tmp_path / "spool.db"
    last_printed = 0
    for round_ in range(3):
        child = subprocess.Popen(
            [sys.executable, "-c", WRITER, str(path), str(max_bytes)],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert child.stdout is not None
        # Kill after a different number of appends each round, mid-loop.
        for _ in range(40 + 17 * round_):
            seq = int(child.stdout.readline())
            assert seq > last_printed
            last_printed = seq
        child.send_signal(signal.SIGKILL)
        child.wait()
        assert child.returncode == -signal.SIGKILL

        raw = sqlite3.connect(path)
        assert raw.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        raw.close()
        with Spool(path, max_bytes=max_bytes) as spool:
            seqs = [seq for seq, _ in spool.pending(limit=100_000)]
            assert seqs == sorted(set(seqs))
            # Every append the writer saw return is durable (nothing was dropped for size
            # in the large spool, and acks only go 20 behind).
            assert last_printed in seqs
            for seq, data in spool.pending(limit=100_000):
                assert data.startswith(b"%d:" % seq)
            stats = spool.stats()
            assert stats.bytes == sum(len(d) for _, d in spool.pending(limit=100_000))
            assert stats.bytes <= max_bytes
            nxt = spool.append(fixed(b"after restart"))
            assert nxt > seqs[-1] and nxt > last_printed
            last_printed = nxt
