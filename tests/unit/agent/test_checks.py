"""Process checks (with real processes) and Windows service checks (with recorded psutil
results: the service API exists only on Windows, so here psutil's service objects are
replaced by recordings of what they answer there; everything else is the real psutil)."""

from __future__ import annotations

import re
import subprocess
import sys
import time
import types
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

from tripline.agent.checks import (
    MAX_PROCESS_CHECKS,
    SERVICE_STATES,
    START_MODES,
    ProcessCheck,
    count_matches,
    parse_process_checks,
    parse_service_checks,
)
from tripline.agent.config import load_agent_config
from tripline.agent.probes import Prober
from tripline.agent.samples import Collection
from tripline.common.config import ConfigError

# --- config -----------------------------------------------------------------------------


def test_process_checks_load_from_the_config_file(tmp_path: Path) -> None:
    path = tmp_path / "agent.yaml"
    path.write_text(
        "process_checks:\n"
        "  - {name: backup, process: '(?i)veeam\\w*\\.exe'}\n"
        "  - {name: sync, cmdline: '.*rsync .*--daily.*'}\n"
        "service_checks: [Spooler, WinDefend]\n",
        encoding="utf-8",
    )
    config = load_agent_config(path, environ={})
    assert [c.name for c in config.process_checks] == ["backup", "sync"]
    assert config.service_checks == ("Spooler", "WinDefend")
    backup = config.process_checks[0]
    assert backup.matches("VeeamAgent.exe", None)
    # full match: a pattern never matches part of a name
    assert not backup.matches("notveeam.exe", None)
    assert not backup.matches("VeeamAgent.exe.bak", None)


@pytest.mark.parametrize(
    ("raw", "key", "reason"),
    [
        ("nope", "process_checks", "expected a list"),
        ([{"name": "a"}], "process_checks[0]", "give a process"),
        ([{"name": "a", "process": "(unclosed"}], "process_checks[0].process", "not a valid"),
        ([{"name": "a", "process": "x" * 257}], "process_checks[0].process", "longer than 256"),
        ([{"name": "bad name", "process": "x"}], "process_checks[0].name", "A-Z"),
        (
            [{"name": "a", "process": "x"}, {"name": "a", "process": "y"}],
            "process_checks[1].name",
            "used by another",
        ),
        ([{"name": "a", "process": "x", "run": "rm"}], "process_checks[0]", "unknown key"),
        (
            [{"name": f"c{i}", "process": "x"} for i in range(MAX_PROCESS_CHECKS + 1)],
            "process_checks",
            "more than 32",
        ),
    ],
)
def test_bad_process_checks_fail_at_load_naming_the_key(raw: Any, key: str, reason: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_process_checks(raw, "agent.yaml")
    assert caught.value.key == key
    assert reason in caught.value.reason


@pytest.mark.parametrize(
    "value", [["Spooler", "spooler"], ["Print Spooler\n"], ["a/b"], [f"s{i}" for i in range(33)]]
)
def test_bad_service_names_are_refused(value: list[str]) -> None:
    with pytest.raises(ValueError):
        parse_service_checks(value)


def test_service_checks_from_the_environment_are_comma_separated() -> None:
    config = load_agent_config(
        None, environ={"TRIPLINE_AGENT_SERVICE_CHECKS": "Spooler, WinDefend"}
    )
    assert config.service_checks == ("Spooler", "WinDefend")


def test_count_matches_counts_each_process_per_check() -> None:
    checks = (
        ProcessCheck("av", process=re.compile("MsMpEng\\.exe")),
        ProcessCheck("py", cmdline=re.compile(".*backup\\.py.*")),
    )
    rows = [("MsMpEng.exe", None), ("python.exe", ["python", "backup.py"]), ("x", None)]
    assert count_matches(checks, rows) == {"av": 1, "py": 1}


# --- process checks with real processes -------------------------------------------------


class _CountingPsutil(types.ModuleType):
    """The real psutil, counting process-table walks (to hold "one scan per interval")."""

    def __init__(self) -> None:
        super().__init__("psutil")
        counted = {"process_iter", "pids"}  # the methods below, not psutil's own
        self.__dict__.update(
            {k: v for k, v in vars(psutil).items() if not k.startswith("__") and k not in counted}
        )
        self.walks = 0

    def process_iter(self, *args: Any, **kwargs: Any) -> Iterator[psutil.Process]:
        self.walks += 1
        return psutil.process_iter(*args, **kwargs)

    def pids(self) -> list[int]:
        self.walks += 1
        return psutil.pids()


def _sleeper(marker: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", marker])


def _matching(collection: Collection, check: str) -> float:
    found = [
        s.value
        for s in collection.samples
        if s.name == "processes_matching" and s.labels == (("check", check),)
    ]
    assert len(found) == 1, found
    return found[0]


@pytest.mark.parametrize("full_scan", [True, False], ids=["with-top-scan", "checks-only-scan"])
def test_process_check_counts_real_processes(full_scan: bool) -> None:
    marker = f"tripline-check-{uuid.uuid4().hex}"
    checks = (
        ProcessCheck("sleeper", cmdline=re.compile(rf".* {re.escape(marker)}")),
        # a name pattern that matches no process at all
        ProcessCheck("absent", process=re.compile(r"no-such-process-\w+")),
    )
    ps = _CountingPsutil()
    prober = Prober(
        collect_processes=full_scan,
        process_interval=0 if full_scan else 60,
        psutil_module=ps,
        process_checks=checks,
    )
    procs: list[subprocess.Popen[bytes]] = []
    try:
        before = prober.collect(time.time())
        assert _matching(before, "sleeper") == 0
        assert _matching(before, "absent") == 0
        procs = [_sleeper(marker), _sleeper(marker)]
        deadline = time.monotonic() + 10
        while True:  # exec of the child's argv takes a moment
            walks = ps.walks
            counted = prober.collect(time.time())
            assert ps.walks == walks + 1, "a collection walked the process table twice"
            if _matching(counted, "sleeper") == 2 or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        assert _matching(counted, "sleeper") == 2
        procs[0].kill()
        procs[0].wait()
        assert _matching(prober.collect(time.time()), "sleeper") == 1
    finally:
        for proc in procs:
            proc.kill()
            proc.wait()
    assert _matching(prober.collect(time.time()), "sleeper") == 0


def test_no_checks_keep_the_cheap_pid_count() -> None:
    ps = _CountingPsutil()
    prober = Prober(collect_processes=False, psutil_module=ps)
    collection = prober.collect(time.time())
    assert ps.walks == 1
    assert not [s for s in collection.samples if s.name == "processes_matching"]


# --- service checks with recorded psutil results ----------------------------------------


class RecordedService:
    """A psutil WindowsService as recorded on Windows (psutil's scripts/winservices.py
    shows these fields): status() and start_type() give the recorded strings."""

    def __init__(self, name: str, status: str, start_type: str) -> None:
        self._name, self._status, self._start_type = name, status, start_type

    def name(self) -> str:
        return self._name

    def status(self) -> str:
        return self._status

    def start_type(self) -> str:
        return self._start_type


RECORDED = {
    "spooler": RecordedService("Spooler", "running", "automatic"),
    "windefend": RecordedService("WinDefend", "stopped", "disabled"),
    "veeamendpointbackupsvc": RecordedService("VeeamEndpointBackupSvc", "start_pending", "manual"),
}


def _psutil_with_services(denied: frozenset[str] = frozenset()) -> types.ModuleType:
    ps = types.ModuleType("psutil")
    ps.__dict__.update({k: v for k, v in vars(psutil).items() if not k.startswith("__")})

    def win_service_get(name: str) -> RecordedService:
        # psutil raises NoSuchProcess for ERROR_SERVICE_DOES_NOT_EXIST and AccessDenied
        # for a service the account may not query; names are case-insensitive on Windows.
        if name.lower() in denied:
            raise psutil.AccessDenied(pid=None, name=name)
        try:
            return RECORDED[name.lower()]
        except KeyError:
            raise psutil.NoSuchProcess(pid=None, name=name) from None

    ps.win_service_get = win_service_get  # type: ignore[attr-defined]
    return ps


def _series(collection: Collection, name: str, service: str) -> dict[str, float]:
    return {
        dict(s.labels)["state" if name == "service_state" else "start_mode"]: s.value
        for s in collection.samples
        if s.name == name and dict(s.labels)["service"] == service
    }


def test_service_state_and_start_mode_follow_windows_exporter() -> None:
    prober = Prober(
        collect_processes=False,
        psutil_module=_psutil_with_services(),
        service_checks=("Spooler", "WinDefend", "VeeamEndpointBackupSvc", "Sophos"),
    )
    c = prober.collect(time.time())
    spooler = _series(c, "service_state", "Spooler")
    assert set(spooler) == set(SERVICE_STATES)
    assert spooler == {s: 1.0 if s == "running" else 0.0 for s in SERVICE_STATES}
    assert _series(c, "service_start_mode", "Spooler") == {
        m: 1.0 if m == "automatic" else 0.0 for m in START_MODES
    }
    assert _series(c, "service_state", "WinDefend")["stopped"] == 1.0
    assert _series(c, "service_state", "WinDefend")["running"] == 0.0
    assert _series(c, "service_start_mode", "WinDefend")["disabled"] == 1.0
    assert _series(c, "service_state", "VeeamEndpointBackupSvc")["start_pending"] == 1.0
    # not installed: every state 0, so "running < 1" catches missing and stopped alike
    assert _series(c, "service_state", "Sophos") == dict.fromkeys(SERVICE_STATES, 0.0)
    assert _series(c, "service_start_mode", "Sophos") == dict.fromkeys(START_MODES, 0.0)
    assert c.probe_errors["services"] == 0


def test_a_service_that_cannot_be_queried_is_counted_and_the_others_still_report() -> None:
    prober = Prober(
        collect_processes=False,
        psutil_module=_psutil_with_services(denied=frozenset({"windefend"})),
        service_checks=("WinDefend", "Spooler"),
    )
    c = prober.collect(time.time())
    assert _series(c, "service_state", "WinDefend") == {}  # unknown, not "stopped"
    assert _series(c, "service_state", "Spooler")["running"] == 1.0
    assert c.probe_errors["services"] == 1


def test_service_checks_off_windows_send_nothing() -> None:
    prober = Prober(collect_processes=False, service_checks=("Spooler",))
    if hasattr(psutil, "win_service_get"):
        pytest.skip("this is Windows: the real service API answers")
    c = prober.collect(time.time())
    assert not [s for s in c.samples if s.name.startswith("service_")]
    assert c.probe_errors["services"] == 0


# --- the docs' examples load ------------------------------------------------------------

RULES_MD = Path(__file__).resolve().parents[3] / "docs" / "rules.md"


def test_the_local_checks_examples_in_rules_md_load(tmp_path: Path) -> None:
    from tripline.alerts.rules import parse_rules

    section = RULES_MD.read_text(encoding="utf-8").split("## Local checks", 1)[1]
    agent_yaml, rules_yaml = re.findall(r"```yaml\n(.*?)```", section, re.S)[:2]
    path = tmp_path / "agent.yaml"
    path.write_text(agent_yaml, encoding="utf-8")
    config = load_agent_config(path, environ={})
    checks = {check.name: check for check in config.process_checks}
    assert checks["backup"].matches("VeeamAgent.exe", None)
    assert checks["antivirus"].matches("MsMpEng.exe", None)
    assert checks["miner"].matches("xmrig.exe", None)
    assert not checks["miner"].matches("explorer.exe", None)
    assert config.service_checks == ("Spooler", "WinDefend")
    assert str(config.textfile_dir) == "C:\\ProgramData\\Tripline\\textfile"
    rules = parse_rules(rules_yaml, "docs/rules.md")
    metrics = {rule.metric for rule in rules.rules}
    assert {"processes_matching", "service_state", "service_start_mode"} <= metrics


def test_once_table_shows_local_checks(tmp_path: Path) -> None:
    from tripline.agent.inventory import inventory
    from tripline.agent.render import render_table
    from tripline.agent.textfile import Textfile

    (tmp_path / "backup.prom").write_text("backup_last_result_ok 1\n", encoding="utf-8")
    (tmp_path / "bad.prom").write_text("bad{", encoding="utf-8")
    prober = Prober(
        collect_processes=False,
        psutil_module=_psutil_with_services(),
        process_checks=(ProcessCheck("none", process=re.compile("no-such-process")),),
        service_checks=("Spooler", "Sophos"),
        textfile=Textfile(tmp_path, max_age=3600, max_series=500),
    )
    table = render_table(prober.collect(time.time()), inventory())
    section = table.split("LOCAL CHECKS\n", 1)[1].split("\n\n", 1)[0]
    assert section.splitlines() == [
        "  process check none: 0 matching",
        "  service Sophos: not installed",
        "  service Spooler: running, automatic",
        "  textfiles: 2 file(s), 1 series, skipped so far: malformed 1",
    ]
