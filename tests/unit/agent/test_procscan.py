"""The Linux context scan from /proc/PID/stat (agent/procscan.py) against psutil, on real
processes: the same figures, and the prober's top lists the same as through psutil."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import types
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from tripline.agent import procscan
from tripline.agent.probes import Prober

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")


@pytest.fixture
def ballast_child() -> Iterator[subprocess.Popen[bytes]]:
    """An idle process holding 300 MiB resident, marked in its command line and name."""
    code = "import sys, time; b = b'x' * (300 << 20); print('ready', flush=True); time.sleep(60)"
    child = subprocess.Popen(
        [sys.executable, "-c", code, "tripline-ballast-marker"], stdout=subprocess.PIPE
    )
    assert child.stdout is not None and child.stdout.readline() == b"ready\n"
    yield child
    child.kill()
    child.wait()


def test_the_scan_reads_what_psutil_reads(ballast_child: subprocess.Popen[bytes]) -> None:
    stats = {s.pid: s for s in procscan.scan()}
    assert set(stats) >= {os.getpid(), ballast_child.pid, 1}
    # within a few pids of psutil's count (processes start and end meanwhile)
    assert abs(len(stats) - len(psutil.pids())) < 10
    child = psutil.Process(ballast_child.pid)
    # stat's rss is the kernel's approximate counter, statm's (psutil's) the exact sum
    assert stats[ballast_child.pid].rss_bytes == pytest.approx(child.memory_info().rss, rel=0.01)
    t = child.cpu_times()
    assert stats[ballast_child.pid].cpu_seconds == pytest.approx(t.user + t.system, abs=0.02)
    me = stats[os.getpid()]
    mine = psutil.Process().cpu_times()
    assert 0 < me.cpu_seconds <= mine.user + mine.system + 0.02


def test_an_odd_command_name_is_parsed_from_after_its_last_parenthesis() -> None:
    # a process may name itself anything, ") 1 2 3" included (prctl, /proc/self/comm)
    code = (
        "import time; open('/proc/self/comm', 'w').write('a) b (c) 9 9'); "
        "print('ready', flush=True); time.sleep(60)"
    )
    child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE)
    try:
        assert child.stdout is not None and child.stdout.readline() == b"ready\n"
        assert psutil.Process(child.pid).name() == "a) b (c) 9 9"
        stats = {s.pid: s for s in procscan.scan()}
        rss = psutil.Process(child.pid).memory_info().rss
        assert stats[child.pid].rss_bytes == pytest.approx(rss, rel=0.05)
        t = psutil.Process(child.pid).cpu_times()
        assert stats[child.pid].cpu_seconds == pytest.approx(t.user + t.system, abs=0.02)
    finally:
        child.kill()
        child.wait()


def test_no_proc_directory_is_an_error_the_prober_counts(tmp_path: Path) -> None:
    with pytest.raises(OSError):
        procscan.scan(str(tmp_path) + "/missing")


def _psutil_path() -> types.ModuleType:
    """The real psutil under another module object: the prober scans through it."""
    module = types.ModuleType("psutil_again")
    module.__dict__.update({k: v for k, v in vars(psutil).items() if not k.startswith("__")})
    return module


def test_the_prober_uses_it_only_with_the_real_psutil() -> None:
    assert procscan.default_scanner(psutil, psutil) is procscan.scan
    assert procscan.default_scanner(_psutil_path(), psutil) is None


def test_top_memory_is_the_same_through_proc_and_through_psutil(
    ballast_child: subprocess.Popen[bytes],
) -> None:
    fast, slow = Prober(top_n=3), Prober(top_n=3, psutil_module=_psutil_path())
    a, b = fast.collect(now=time.time()), slow.collect(now=time.time())
    top_fast = {p.pid: p for p in a.context.top_memory}
    top_slow = {p.pid: p for p in b.context.top_memory}
    ballast = top_fast[ballast_child.pid]
    assert ballast == top_slow[ballast_child.pid]
    assert ballast.memory_rss_bytes >= 300 << 20 and ballast.name.startswith("python")
    assert "tripline-ballast-marker" in ballast.cmdline and ballast.username
    assert [p.memory_rss_bytes for p in a.context.top_memory] == sorted(
        (p.memory_rss_bytes for p in a.context.top_memory), reverse=True
    )
