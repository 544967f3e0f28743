"""Install the agent as an operating-system service: systemd, launchd or Windows SCM.

The unit and plist texts are pure functions of a :class:`ServiceSpec`; the files in
``deploy/`` are their output for the default paths (a test keeps them equal).
:func:`install_service` and :func:`uninstall_service` write under ``root`` so a test or
an image build can target a directory instead of the running system: against any
root but ``/`` they only use tools that work offline (``systemctl --root``,
``systemd-sysusers --root``) and leave the rest to the returned ``pending`` commands.
"""

from __future__ import annotations

import contextlib
import plistlib
import shlex
import shutil
import subprocess
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SERVICE_NAME = "tripline-agent"
UNIT_NAME = f"{SERVICE_NAME}.service"
UNIT_PATH = Path("etc/systemd/system") / UNIT_NAME
SYSUSERS_PATH = Path("etc/sysusers.d") / f"{SERVICE_NAME}.conf"
LINUX_STATE_DIR = Path("/var/lib") / SERVICE_NAME

LAUNCHD_LABEL = "com.tripline.agent"
PLIST_PATH = Path("Library/LaunchDaemons") / f"{LAUNCHD_LABEL}.plist"
MACOS_STATE_DIR = Path("/Library/Application Support/Tripline/agent")
MACOS_LOG = Path("/Library/Logs/Tripline/agent.log")

WINDOWS_SERVICE = "TriplineAgent"
# A built-in account with the rights of an ordinary user: the Windows counterpart of
# the dedicated non-root user on Linux.
WINDOWS_ACCOUNT = r"NT AUTHORITY\LocalService"
WINDOWS_STATE_DIR = Path(r"C:\ProgramData\Tripline\agent")

Command = tuple[str, ...]
Runner = Callable[[Command], None]


class ServiceError(Exception):
    """Installing or removing the service failed; says what and where."""


@dataclass(frozen=True)
class ServiceSpec:
    """What the service runs and within which limits."""

    executable: Path
    config: Path
    state_dir: Path = LINUX_STATE_DIR
    user: str = SERVICE_NAME
    cpu_quota_percent: int = 10
    memory_max: str = "128M"

    @property
    def argv(self) -> list[str]:
        # --state-dir wins over the config file, so the spool always lands in the
        # directory the service manager created and made writable.
        return [
            str(self.executable),
            "--config",
            str(self.config),
            "--state-dir",
            str(self.state_dir),
        ]


@dataclass(frozen=True)
class ServiceResult:
    """What an install or uninstall did, and what is left for the operator to run."""

    written: tuple[Path, ...] = ()
    removed: tuple[Path, ...] = ()
    ran: tuple[Command, ...] = ()
    pending: tuple[Command, ...] = ()

    def describe(self) -> str:
        lines = [f"wrote {p}" for p in self.written]
        lines += [f"removed {p}" for p in self.removed]
        lines += [f"ran: {shlex.join(c)}" for c in self.ran]
        if self.pending:
            lines.append("left to do (run as root):")
            lines += [f"  {shlex.join(c)}" for c in self.pending]
        return "\n".join(lines)


def unit_text(spec: ServiceSpec) -> str:
    """The systemd unit: a dedicated user, a read-only system, capped CPU and memory."""
    if spec.state_dir.parent != Path("/var/lib"):
        raise ServiceError(f"state_dir must be directly under /var/lib, got {spec.state_dir}")
    return f"""\
[Unit]
Description=Tripline agent (office PC health to the MSP's collector)
After=network-online.target
Wants=network-online.target

[Service]
Type=exec
ExecStart={_systemd_escape(shlex.join(spec.argv))}
User={spec.user}
Group={spec.user}
Restart=always
RestartSec=5
# the spool and identity; created and owned for the user by systemd
StateDirectory={spec.state_dir.name}
StateDirectoryMode=0700
NoNewPrivileges=yes
ProtectSystem=strict
# read-only, not hidden: the filesystem probe measures /home too
ProtectHome=read-only
PrivateTmp=yes
PrivateDevices=yes
ProtectKernelTunables=yes
ProtectKernelModules=yes
ProtectControlGroups=yes
RestrictSUIDSGID=yes
RestrictRealtime=yes
LockPersonality=yes
RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX AF_NETLINK
# the agent needs little: cap it so a bug can never hurt the user's PC
CPUQuota={spec.cpu_quota_percent}%
MemoryMax={spec.memory_max}
Nice=10

[Install]
WantedBy=multi-user.target
"""


def _systemd_escape(command_line: str) -> str:
    # % starts a systemd specifier and $ an environment variable in ExecStart.
    return command_line.replace("%", "%%").replace("$", "$$")


def sysusers_text(user: str) -> str:
    """systemd-sysusers line creating the service's system user and group."""
    return f'u {user} - "Tripline agent" {LINUX_STATE_DIR}\n'


def plist_text(spec: ServiceSpec, user: str | None = None) -> str:
    """The launchd daemon plist; ``user`` runs it as that (existing) account."""
    plist: dict[str, object] = {
        "Label": LAUNCHD_LABEL,
        "ProgramArguments": spec.argv,
        "RunAtLoad": True,
        "KeepAlive": True,
        "ThrottleInterval": 5,
        "ProcessType": "Background",
        "LowPriorityIO": True,
        "Nice": 10,
        "StandardErrorPath": str(MACOS_LOG),
    }
    if user is not None:
        plist["UserName"] = user
    return plistlib.dumps(plist, sort_keys=False).decode()


def default_executable() -> Path:
    """The ``tripline-agent`` script next to this interpreter, else the one on PATH."""
    script = Path(sys.executable).with_name("tripline-agent")
    found = shutil.which("tripline-agent")
    if script.exists():
        return script
    if found:
        return Path(found)
    raise ServiceError(
        f"no `tripline-agent` executable next to {sys.executable} or on PATH; pass executable="
    )


def run_checked(command: Command) -> None:
    try:
        subprocess.run(command, check=True, capture_output=True, text=True)
    except FileNotFoundError:
        raise ServiceError(f"{command[0]} not found (needed for: {shlex.join(command)})") from None
    except subprocess.CalledProcessError as exc:
        raise ServiceError(f"{shlex.join(command)} failed: {exc.stderr.strip()}") from None


def systemd_running(root: Path) -> bool:
    """sd_booted(): systemd is PID 1 when this directory exists."""
    return root == Path("/") and Path("/run/systemd/system").is_dir()


def install_service(
    config_path: Path,
    *,
    executable: Path | None = None,
    user: str = SERVICE_NAME,
    root: Path = Path("/"),
    start: bool = True,
    platform: str = sys.platform,
    run: Runner = run_checked,
) -> ServiceResult:
    """Write and enable the agent's service for this platform."""
    config_path = Path(config_path)
    if not config_path.is_absolute():
        raise ServiceError(f"the config path must be absolute, got {config_path}")
    if not under_root(root, config_path).is_file():
        raise ServiceError(f"no agent config at {under_root(root, config_path)}")
    executable = executable or default_executable()
    if platform.startswith("linux"):
        return _install_systemd(ServiceSpec(executable, config_path, user=user), root, start, run)
    if platform == "darwin":
        spec = ServiceSpec(executable, config_path, state_dir=MACOS_STATE_DIR)
        return _install_launchd(spec, root, start, run)
    if platform == "win32":
        return _install_windows(config_path, start)
    raise ServiceError(f"no service manager support for platform {platform!r}")


def uninstall_service(
    *,
    root: Path = Path("/"),
    platform: str = sys.platform,
    run: Runner = run_checked,
) -> ServiceResult:
    """Stop, disable and remove the agent's service. The state directory (spool,
    identity) is kept, so a reinstall resumes as the same agent."""
    if platform.startswith("linux"):
        return _uninstall_systemd(root, run)
    if platform == "darwin":
        return _uninstall_launchd(root, run)
    if platform == "win32":
        return _uninstall_windows()
    raise ServiceError(f"no service manager support for platform {platform!r}")


def under_root(root: Path, path: Path) -> Path:
    """Where an absolute path of the target system lies when that system is at ``root``."""
    return path if root == Path("/") else root / path.relative_to(path.anchor)


def _write(path: Path, text: str) -> Path:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        path.chmod(0o644)
    except OSError as exc:
        raise ServiceError(f"cannot write {path}: {exc.strerror} (run as root?)") from None
    return path


def _install_systemd(spec: ServiceSpec, root: Path, start: bool, run: Runner) -> ServiceResult:
    written = (
        _write(root / SYSUSERS_PATH, sysusers_text(spec.user)),
        _write(root / UNIT_PATH, unit_text(spec)),
    )
    if root != Path("/"):
        # An image or a test: only what works offline, never the running system's state.
        offline: list[Command] = [
            ("systemd-sysusers", f"--root={root}", SYSUSERS_PATH.name),
            ("systemctl", f"--root={root}", "enable", UNIT_NAME),
        ]
        ran = tuple(c for c in offline if shutil.which(c[0]))
        for command in ran:
            run(command)
        pending = tuple(c for c in offline if c not in ran)
        return ServiceResult(written=written, ran=ran, pending=pending)
    now, later = systemd_commands(spec, start=start, booted=systemd_running(root))
    for command in now:
        run(command)
    return ServiceResult(written=written, ran=now, pending=later)


def systemd_commands(
    spec: ServiceSpec, *, start: bool, booted: bool
) -> tuple[tuple[Command, ...], tuple[Command, ...]]:
    """(what to run now, what is left for later) after writing the unit on this system."""
    # The config holds the enrollment token: readable by the service's group only.
    now: list[Command] = [
        ("systemd-sysusers", str(Path("/") / SYSUSERS_PATH)),
        ("chgrp", spec.user, str(spec.config)),
        ("chmod", "0640", str(spec.config)),
    ]
    if booted:
        now.append(("systemctl", "daemon-reload"))
        now.append(("systemctl", "enable", *(["--now"] if start else []), UNIT_NAME))
        return tuple(now), ()
    now.append(("systemctl", "enable", UNIT_NAME))  # works without a running systemd
    return tuple(now), ((("systemctl", "start", UNIT_NAME),) if start else ())


def _uninstall_systemd(root: Path, run: Runner) -> ServiceResult:
    unit = root / UNIT_PATH
    ran: list[Command] = []
    if root != Path("/"):
        if shutil.which("systemctl") and unit.exists():
            ran.append(("systemctl", f"--root={root}", "disable", UNIT_NAME))
    elif systemd_running(root):
        ran.append(("systemctl", "disable", "--now", UNIT_NAME))
    elif unit.exists():
        ran.append(("systemctl", "disable", UNIT_NAME))
    for command in ran:
        run(command)
    removed = tuple(p for p in (unit, root / SYSUSERS_PATH) if p.exists())
    for path in removed:
        path.unlink()
    if systemd_running(root):
        run(("systemctl", "daemon-reload"))
        ran.append(("systemctl", "daemon-reload"))
    return ServiceResult(removed=removed, ran=tuple(ran))


def _install_launchd(spec: ServiceSpec, root: Path, start: bool, run: Runner) -> ServiceResult:
    plist = _write(root / PLIST_PATH, plist_text(spec))
    commands: list[Command] = [
        ("mkdir", "-p", str(spec.state_dir), str(MACOS_LOG.parent)),
        ("chmod", "0700", str(spec.state_dir)),
    ]
    if start:
        commands.append(("launchctl", "bootstrap", "system", str(Path("/") / PLIST_PATH)))
    if root != Path("/"):
        return ServiceResult(written=(plist,), pending=tuple(commands))
    for command in commands:
        run(command)
    return ServiceResult(written=(plist,), ran=tuple(commands))


def _uninstall_launchd(root: Path, run: Runner) -> ServiceResult:
    plist = root / PLIST_PATH
    ran: tuple[Command, ...] = ()
    if root == Path("/") and plist.exists():
        ran = (("launchctl", "bootout", f"system/{LAUNCHD_LABEL}"),)
        for command in ran:
            run(command)
    removed = (plist,) if plist.exists() else ()
    for path in removed:
        path.unlink()
    return ServiceResult(removed=removed, ran=ran)


# -- Windows ---------------------------------------------------------------------------
# Untested here (no Windows in CI): the service is hosted by pywin32's pythonservice.exe,
# which imports WindowsAgentService from this module and reads the config path from the
# service's registry Parameters key.


def _pywin32() -> tuple[Any, Any]:  # pragma: no cover
    try:
        import win32service
        import win32serviceutil
    except ImportError:
        raise ServiceError("the Windows service needs pywin32: pip install pywin32") from None
    return win32service, win32serviceutil


def _install_windows(config_path: Path, start: bool) -> ServiceResult:  # pragma: no cover
    win32service, win32serviceutil = _pywin32()
    WINDOWS_STATE_DIR.mkdir(parents=True, exist_ok=True)
    grant: Command = (
        "icacls",
        str(WINDOWS_STATE_DIR),
        "/grant",
        f"{WINDOWS_ACCOUNT}:(OI)(CI)M",
    )
    run_checked(grant)
    win32serviceutil.InstallService(
        f"{__name__}.WindowsAgentService",
        WINDOWS_SERVICE,
        "Tripline agent",
        startType=win32service.SERVICE_AUTO_START,
        userName=WINDOWS_ACCOUNT,
        password="",
        description="Office PC health to the MSP's Tripline collector.",
    )
    win32serviceutil.SetServiceCustomOption(WINDOWS_SERVICE, "config", str(config_path))
    recovery: Command = (
        "sc.exe",
        "failure",
        WINDOWS_SERVICE,
        "reset=",
        "86400",
        "actions=",
        "restart/5000",
    )
    run_checked(recovery)
    ran = [grant, recovery]
    if start:
        win32serviceutil.StartService(WINDOWS_SERVICE)
        ran.append(("sc.exe", "start", WINDOWS_SERVICE))
    return ServiceResult(ran=tuple(ran))


def _uninstall_windows() -> ServiceResult:  # pragma: no cover
    _, win32serviceutil = _pywin32()
    with contextlib.suppress(win32serviceutil.error):  # already stopped
        win32serviceutil.StopService(WINDOWS_SERVICE)
    win32serviceutil.RemoveService(WINDOWS_SERVICE)
    return ServiceResult(ran=(("sc.exe", "delete", WINDOWS_SERVICE),))


if sys.platform == "win32":  # pragma: no cover
    import asyncio
    import threading

    import servicemanager
    import win32serviceutil

    class WindowsAgentService(win32serviceutil.ServiceFramework):  # type: ignore[misc]
        _svc_name_ = WINDOWS_SERVICE
        _svc_display_name_ = "Tripline agent"

        def __init__(self, args: Sequence[str]) -> None:
            super().__init__(args)
            self._loop: asyncio.AbstractEventLoop | None = None
            self._stop: asyncio.Event | None = None
            self._started = threading.Event()

        def SvcStop(self) -> None:  # pywin32's name
            import win32service

            self.ReportServiceStatus(win32service.SERVICE_STOP_PENDING)
            self._started.wait(30)
            if self._loop is not None and self._stop is not None:
                self._loop.call_soon_threadsafe(self._stop.set)

        def SvcDoRun(self) -> None:  # pywin32's name
            from tripline.agent.config import load_agent_config
            from tripline.agent.runner import AgentRunner
            from tripline.common import logs

            config_path = win32serviceutil.GetServiceCustomOption(self, "config")
            config = load_agent_config(Path(config_path), flags={"state_dir": WINDOWS_STATE_DIR})
            logs.configure(config.log_format, config.log_level)
            servicemanager.LogInfoMsg(f"Tripline agent starting with {config_path}")

            async def main() -> None:
                self._loop = asyncio.get_running_loop()
                self._stop = asyncio.Event()
                self._started.set()
                await AgentRunner(config).run(self._stop)

            asyncio.run(main())
