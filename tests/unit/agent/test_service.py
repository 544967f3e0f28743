"""The agent's service installation: the systemd unit (checked by systemd-analyze), and
install/uninstall against a temporary root with the real offline systemd tools.

The Windows service (pywin32) cannot run here and is not tested."""

from __future__ import annotations

import plistlib
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.deployfiles import analyze_problems
from tripline.agent import cli, service
from tripline.agent.service import ServiceError, ServiceSpec, install_service, uninstall_service

CONFIG = Path("/etc/tripline/agent.yaml")


def unit_values(text: str) -> dict[str, str]:
    """key -> value of a unit file (our units never repeat a key)."""
    values: dict[str, str] = {}
    for line in text.splitlines():
        if "=" in line and not line.startswith("#"):
            key, _, value = line.partition("=")
            assert key not in values, f"{key} repeated"
            values[key] = value
    return values


def forbid(command: tuple[str, ...]) -> None:
    raise AssertionError(f"must not run {command} against a temporary root")


@pytest.fixture
def root(tmp_path: Path) -> Path:
    r = tmp_path / "root"
    (r / "etc/tripline").mkdir(parents=True)
    (r / "etc/tripline/agent.yaml").write_text("agent:\n  collector: 10.0.0.1:7700\n")
    return r


def test_unit_runs_the_agent_as_a_dedicated_user_with_hardening() -> None:
    spec = ServiceSpec(Path("/opt/tripline/bin/tripline-agent"), CONFIG)
    values = unit_values(service.unit_text(spec))
    assert shlex.split(values["ExecStart"]) == [
        "/opt/tripline/bin/tripline-agent",
        "--config",
        str(CONFIG),
        "--state-dir",
        "/var/lib/tripline-agent",
    ]
    assert values["User"] == values["Group"] == "tripline-agent"
    assert values["StateDirectory"] == "tripline-agent"
    assert values["NoNewPrivileges"] == "yes"
    assert values["ProtectSystem"] == "strict"
    assert values["ProtectHome"] == "read-only"
    assert values["CPUQuota"] == "10%"
    assert values["MemoryMax"] == "128M"
    assert values["WantedBy"] == "multi-user.target"
    assert service.sysusers_text("tripline-agent").split()[:2] == ["u", "tripline-agent"]


def test_unit_escapes_systemd_specifiers_in_paths() -> None:
    spec = ServiceSpec(Path("/opt/tripline/bin/tripline"), Path("/etc/tripline/100%$HOME.yaml"))
    assert "/etc/tripline/100%%$$HOME.yaml" in service.unit_text(spec)


def test_state_dir_outside_var_lib_is_refused() -> None:
    with pytest.raises(ServiceError, match="/var/lib"):
        service.unit_text(ServiceSpec(Path("/bin/tripline"), CONFIG, state_dir=Path("/srv/x")))


@pytest.fixture
def systemd_analyze() -> str:
    path = shutil.which("systemd-analyze")
    if path is None:
        pytest.skip("systemd-analyze not installed (apt-get install systemd)")
    return path


def test_unit_passes_systemd_analyze_verify(tmp_path: Path, systemd_analyze: str) -> None:
    spec = ServiceSpec(service.default_executable(), CONFIG)
    unit = tmp_path / service.UNIT_NAME
    unit.write_text(service.unit_text(spec))
    assert analyze_problems(unit) == []


def test_verify_check_catches_a_bad_unit(tmp_path: Path, systemd_analyze: str) -> None:
    spec = ServiceSpec(service.default_executable(), CONFIG)
    unit = tmp_path / service.UNIT_NAME
    unit.write_text(service.unit_text(spec).replace("ProtectSystem=strict", "ProtectSystem=x"))
    assert analyze_problems(unit), "a bad value must be reported"
    unit.write_text(service.unit_text(ServiceSpec(Path("/nonexistent/tripline"), CONFIG)))
    assert analyze_problems(unit), "a missing executable must be reported"


def test_install_and_uninstall_against_a_temporary_root(root: Path) -> None:
    exe = Path("/opt/tripline/bin/tripline")
    result = install_service(CONFIG, executable=exe, root=root, platform="linux")
    unit = root / "etc/systemd/system/tripline-agent.service"
    sysusers = root / "etc/sysusers.d/tripline-agent.conf"
    assert set(result.written) == {unit, sysusers}
    assert unit.read_text() == service.unit_text(ServiceSpec(exe, CONFIG))
    tools = {c[0] for c in result.ran}
    assert tools == {t for t in ("systemd-sysusers", "systemctl") if shutil.which(t)}
    assert {c[0] for c in result.pending} == {"systemd-sysusers", "systemctl"} - tools
    assert all(f"--root={root}" in c for c in result.ran + result.pending)

    wants = root / "etc/systemd/system/multi-user.target.wants/tripline-agent.service"
    if "systemctl" in tools:
        assert wants.is_symlink()
        assert _is_enabled(root) == "enabled"
    if "systemd-sysusers" in tools:
        passwd = {
            line.split(":")[0]: line for line in (root / "etc/passwd").read_text().splitlines()
        }
        entry = passwd["tripline-agent"].split(":")
        assert entry[2] != "0" and entry[6].endswith("nologin"), entry

    result = uninstall_service(root=root, platform="linux")
    assert set(result.removed) == {unit, sysusers}
    assert not unit.exists() and not sysusers.exists()
    assert not wants.exists() and not wants.is_symlink()
    assert uninstall_service(root=root, platform="linux").removed == ()


def _is_enabled(root: Path) -> str:
    result = subprocess.run(
        ["systemctl", f"--root={root}", "is-enabled", service.UNIT_NAME],
        capture_output=True,
        text=True,
        timeout=30,
    )
    return result.stdout.strip()


@pytest.mark.parametrize(
    ("booted", "start", "last", "pending"),
    [
        (True, True, ("systemctl", "enable", "--now", "tripline-agent.service"), ()),
        (True, False, ("systemctl", "enable", "tripline-agent.service"), ()),
        (
            False,
            True,
            ("systemctl", "enable", "tripline-agent.service"),
            (("systemctl", "start", "tripline-agent.service"),),
        ),
        (False, False, ("systemctl", "enable", "tripline-agent.service"), ()),
    ],
)
def test_commands_on_the_running_system(
    booted: bool, start: bool, last: tuple[str, ...], pending: tuple[tuple[str, ...], ...]
) -> None:
    spec = ServiceSpec(Path("/opt/tripline/bin/tripline"), CONFIG)
    now, later = service.systemd_commands(spec, start=start, booted=booted)
    assert now[0] == ("systemd-sysusers", "/etc/sysusers.d/tripline-agent.conf")
    assert ("chgrp", "tripline-agent", str(CONFIG)) in now
    assert ("chmod", "0640", str(CONFIG)) in now
    assert (("systemctl", "daemon-reload") in now) is booted
    assert now[-1] == last
    assert later == pending


def test_launchd_plist_against_a_temporary_root(root: Path) -> None:
    exe = Path("/opt/tripline/bin/tripline")
    config = Path("/Library/Application Support/Tripline/agent.yaml")
    (root / config.relative_to("/")).parent.mkdir(parents=True)
    (root / config.relative_to("/")).write_text("agent: {}\n")
    result = install_service(config, executable=exe, root=root, platform="darwin", run=forbid)
    plist_path = root / "Library/LaunchDaemons/com.tripline.agent.plist"
    assert result.written == (plist_path,)
    plist = plistlib.loads(plist_path.read_bytes())
    assert plist["Label"] == "com.tripline.agent"
    assert plist["ProgramArguments"][:4] == [str(exe), "--config", str(config), "--state-dir"]
    assert plist["KeepAlive"] is True and plist["RunAtLoad"] is True
    assert ("launchctl", "bootstrap", "system", "/" + str(service.PLIST_PATH)) in result.pending
    assert uninstall_service(root=root, platform="darwin", run=forbid).removed == (plist_path,)
    assert not plist_path.exists()


def test_install_refuses_a_missing_or_relative_config(root: Path) -> None:
    exe = Path("/opt/tripline/bin/tripline")
    with pytest.raises(ServiceError, match="no agent config"):
        install_service(Path("/etc/nope.yaml"), executable=exe, root=root, platform="linux")
    with pytest.raises(ServiceError, match="absolute"):
        install_service(Path("agent.yaml"), executable=exe, root=root, platform="linux")
    with pytest.raises(ServiceError, match="platform"):
        install_service(CONFIG, executable=exe, root=root, platform="sunos5", run=forbid)
    assert not (root / "etc/systemd").exists()


def test_cli_install_and_uninstall_service(root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["install-service", "--config", str(CONFIG), "--root", str(root)]) == 0
    unit = root / "etc/systemd/system/tripline-agent.service"
    assert f"--config {CONFIG}" in unit.read_text()
    assert f"wrote {unit}" in capsys.readouterr().out
    assert cli.main(["uninstall-service", "--root", str(root)]) == 0
    assert not unit.exists()


def test_cli_install_service_needs_a_valid_config(
    root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["install-service", "--root", str(root)]) == cli.EXIT_USAGE
    assert "--config" in capsys.readouterr().err
    (root / "etc/tripline/agent.yaml").write_text("agent:\n  collector: no-port\n")
    args = ["install-service", "--config", str(CONFIG), "--root", str(root)]
    assert cli.main(args) == cli.EXIT_USAGE
    assert "collector" in capsys.readouterr().err
    assert not (root / "etc/systemd").exists()


def test_cli_agent_run_flags_still_parse() -> None:
    args = cli.build_parser().parse_args(["--collector", "h:1", "--once", "--json"])
    assert args.action is None and args.once and args.collector == "h:1"
