"""bench/agent_venv.py: the cached agent-only venv is rebuilt when, and only when, what
pip would build it from changes; bench/procstat.memory reads a real process."""

from __future__ import annotations

import os
from pathlib import Path

from bench import procstat
from bench.agent_venv import source_key


def _tree(root: Path) -> None:
    for dist in ("protos", "agent"):
        (root / dist / "src").mkdir(parents=True)
        (root / dist / "pyproject.toml").write_text(f"[project]\nname = '{dist}'\n")
    (root / "agent/src/probes.py").write_text("X = 1\n")


def test_the_key_follows_the_sources_and_ignores_build_leftovers(tmp_path: Path) -> None:
    _tree(tmp_path)
    key = source_key(tmp_path)
    for leftover in ("agent/build/lib/x.py", "agent/src/__pycache__/probes.pyc"):
        (tmp_path / leftover).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / leftover).write_text("junk")
    (tmp_path / "agent/tripline_agent.egg-info").mkdir()
    (tmp_path / "agent/tripline_agent.egg-info/PKG-INFO").write_text("junk")
    (tmp_path / "collector").mkdir()  # not part of the agent-only install
    (tmp_path / "collector/x.py").write_text("junk")
    assert source_key(tmp_path) == key
    (tmp_path / "agent/src/probes.py").write_text("X = 2\n")
    assert source_key(tmp_path) != key


def test_memory_measures_this_process(tmp_path: Path) -> None:
    m = procstat.memory(os.getpid())
    assert 0 < m.uss <= m.pss <= m.rss
    assert m.rss == m.rss_anon + m.rss_file and m.rss_anon > 0 and m.rss_file > 0
