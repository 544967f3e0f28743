"""Slow-changing facts about the machine (host name, OS, CPU count, machine id), sent with
the first report and then every ``inventory_interval``. A probe module: psutil is read
here and in `probes.py` / `processes.py` only (STYLE.md 4)."""

from __future__ import annotations

import platform
import socket
import sys
from dataclasses import dataclass
from pathlib import Path

import psutil


@dataclass(frozen=True)
class Inventory:
    hostname: str
    os: str
    os_release: str
    architecture: str
    machine_id: str
    cpu_count: int
    memory_total_bytes: int
    boot_time_seconds: float
    python_version: str


def inventory() -> Inventory:
    """Slow-changing facts about this machine."""
    return Inventory(
        hostname=socket.gethostname(),
        os=platform.system(),
        os_release=platform.release(),
        architecture=platform.machine(),
        machine_id=_machine_id(),
        cpu_count=psutil.cpu_count(logical=True) or 0,
        memory_total_bytes=psutil.virtual_memory().total,
        boot_time_seconds=psutil.boot_time(),
        python_version=platform.python_version(),
    )


def _machine_id() -> str:
    """The OS's stable machine id, or "" where there is none to read."""
    if sys.platform == "win32":  # spelled out so type checkers skip winreg elsewhere
        import winreg

        try:
            key = winreg.OpenKey(winreg.HKEY_LOCAL_MACHINE, r"SOFTWARE\Microsoft\Cryptography")
            with key:
                return str(winreg.QueryValueEx(key, "MachineGuid")[0])
        except OSError:
            return ""
    # systemd writes /etc/machine-id; older and non-systemd distributions only have dbus's.
    # macOS has neither (its IOPlatformUUID needs ioreg, a subprocess not worth spawning).
    for candidate in ("/etc/machine-id", "/var/lib/dbus/machine-id"):
        try:
            value = Path(candidate).read_text(encoding="ascii").strip()
        except (OSError, UnicodeDecodeError):
            continue
        if value:
            return value
    return ""
