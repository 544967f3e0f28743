"""Owner-only directories and files, whatever the umask or the modes found on disk."""

from __future__ import annotations

import json
import logging
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from tripline.common.config import ConfigError
from tripline.common.files import private_database, private_dir, private_if_exists, sqlite_file

ROOT = Path(__file__).resolve().parents[3]


def mode(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


def test_loose_directory_and_database_are_tightened_with_a_log_line(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    data = tmp_path / "data"
    data.mkdir(mode=0o755)
    data.chmod(0o755)
    db = data / "tripline.db"
    for path in (db, data / "tripline.db-wal", data / "tripline.db-shm"):
        path.write_bytes(b"")
        path.chmod(0o644)
    with caplog.at_level(logging.WARNING, logger="tripline.common.files"):
        private_dir(data, "data_dir")
        private_database(db, "data_dir")
    assert mode(data) == 0o700
    assert [mode(p) for p in sorted(data.iterdir())] == [0o600, 0o600, 0o600]
    tightened = [r for r in caplog.records if r.getMessage() == "tightened permissions"]
    assert [(r.path, r.mode_was) for r in tightened] == [  # type: ignore[attr-defined]
        (str(data), "0755"),
        (str(db), "0644"),
        (str(db) + "-wal", "0644"),
        (str(db) + "-shm", "0644"),
    ]
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="tripline.common.files"):
        private_dir(data, "data_dir")  # already private: nothing to say
    assert caplog.records == []


def test_a_shared_directory_is_refused(tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o1777)
    with pytest.raises(ConfigError, match=r"state_dir.*shared directory"):
        private_dir(shared, "state_dir")
    assert mode(shared) == 0o1777  # left as it was


def test_a_symlinked_file_is_refused(tmp_path: Path) -> None:
    target = tmp_path / "elsewhere"
    target.write_text("{}")
    link = tmp_path / "identity.json"
    link.symlink_to(target)
    with pytest.raises(ConfigError, match="symbolic link"):
        private_if_exists(link, "state_dir")
    private_if_exists(tmp_path / "missing.json", "state_dir")  # missing stays missing
    assert not (tmp_path / "missing.json").exists()


def test_sqlite_file_of_a_url() -> None:
    assert sqlite_file("sqlite:////var/lib/t/tripline.db") == Path("/var/lib/t/tripline.db")
    assert sqlite_file("sqlite:///rel/t.db?timeout=5") == Path("rel/t.db")
    assert sqlite_file("sqlite:///:memory:") is None
    assert sqlite_file("postgresql+psycopg://u@h/db") is None


AGENT_FILES = """
import json, os, sys
from pathlib import Path
os.umask(0)
from tripline.agent import identity
from tripline.agent.spool import Spool
from tripline.common.files import private_dir
state = Path(sys.argv[1])
private_dir(state, "state_dir")
spool = Spool(state / "spool.db")
spool.append(lambda seq, dropped: b"report")
identity.save(state / "identity.json", identity.Identity("agt_1", "secret", "acme"))
print(json.dumps({p.name: oct(p.stat().st_mode & 0o777) for p in [state, *state.iterdir()]}))
spool.close()
"""


def test_agent_state_is_private_under_umask_000(tmp_path: Path) -> None:
    state = tmp_path / "state"
    # a leftover temporary identity file with a loose mode must not pass its mode on
    state.mkdir()
    (state / "identity.tmp").write_text("")
    (state / "identity.tmp").chmod(0o666)
    result = subprocess.run(
        [sys.executable, "-c", AGENT_FILES, str(state)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    modes = json.loads(result.stdout)
    assert modes.pop("state") == "0o700"
    assert modes == {name: "0o600" for name in modes}
    assert {"spool.db", "spool.db-wal", "spool.db-shm", "identity.json"} <= set(modes)
