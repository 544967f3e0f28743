"""Human-readable and JSON views of one collection, for `tripline agent --once`."""

from __future__ import annotations

import dataclasses
import json
from collections import defaultdict
from collections.abc import Sequence
from datetime import UTC, datetime

from tripline.agent.convert import collection_to_dict
from tripline.agent.inventory import Inventory
from tripline.agent.samples import Collection, ProcessSample
from tripline.common import catalogue
from tripline.common.terminal import escape

_Series = dict[str, list[tuple[dict[str, str], float]]]


def render_json(collection: Collection, inventory: Inventory) -> str:
    document = {"host": dataclasses.asdict(inventory), **collection_to_dict(collection)}
    return json.dumps(document, indent=2, sort_keys=True)


def render_table(collection: Collection, inventory: Inventory) -> str:
    series: _Series = defaultdict(list)
    for s in collection.samples:
        series[s.name].append((dict(s.labels), s.value))
    parts = [
        _header(collection, inventory, series),
        _cpu(series),
        _memory(series),
        _filesystems(series),
        _disks(series),
        _network(series),
        _sensors(series),
        _processes("TOP PROCESSES BY CPU", collection.context.top_cpu),
        _processes("TOP PROCESSES BY MEMORY", collection.context.top_memory),
        _local_checks(series),
        _agent(collection, series),
    ]
    return "\n\n".join(p for p in parts if p) + "\n"


def human_bytes(n: float) -> str:
    """1536 -> '1.5 KiB' (binary units, like `df -h`)."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if abs(n) < 1024 or unit == "PiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


def human_duration(seconds: float) -> str:
    """200000 -> '2d 7h 33m'."""
    minutes, _ = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    days, hours = divmod(hours, 24)
    if days:
        return f"{days}d {hours}h {minutes}m"
    return f"{hours}h {minutes}m" if hours else f"{minutes}m"


def _pct(ratio: float) -> str:
    return f"{ratio * 100:.1f}%"


def _cores(ratio: float) -> str:
    # A process's cpu_ratio is a share of one core (0..cpu_count), not of the machine: as a
    # percentage, 150% on an 8-core PC reads as impossible or as the whole machine.
    return f"{ratio:.2f}"


def _one(series: _Series, name: str) -> float | None:
    for labels, value in series.get(name, []):
        if not labels:
            return value
    return None


def _by(series: _Series, name: str, key: str) -> dict[str, float]:
    return {labels.get(key, ""): value for labels, value in series.get(name, [])}


def _table(headers: Sequence[str], rows: Sequence[Sequence[str]], right: set[int]) -> str:
    # Process names, command lines, mount points and device names are whatever a local
    # program chose: escaped, so none can move the cursor or write the clipboard.
    rows = [[escape(c) for c in row] for row in rows]
    widths = [max(len(str(c)) for c in col) for col in zip(headers, *rows, strict=True)]

    def line(cells: Sequence[str]) -> str:
        padded = (
            c.rjust(w) if i in right else c.ljust(w)
            for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        )
        return "  " + "  ".join(padded).rstrip()

    return "\n".join([line(headers), *(line(r) for r in rows)])


def _header(c: Collection, inv: Inventory, series: _Series) -> str:
    at = datetime.fromtimestamp(c.collected_at, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    uptime = _one(series, "uptime_seconds")
    users = c.context.logged_in_users
    return "\n".join(
        [
            f"HOST {escape(inv.hostname)}",
            f"  {inv.os} {inv.os_release} {inv.architecture}, {inv.cpu_count} CPUs, "
            f"{human_bytes(inv.memory_total_bytes)} RAM, Python {inv.python_version}",
            f"  machine id {inv.machine_id or '-'}, "
            f"up {human_duration(uptime) if uptime is not None else '?'}, collected {at}",
            *([f"  logged in: {escape(', '.join(users))}"] if users else []),
        ]
    )


def _cpu(series: _Series) -> str:
    lines = ["CPU"]
    total = _one(series, "cpu_usage_ratio")
    if total is None:
        lines.append("  usage: needs two collections (the first one only takes a baseline)")
    else:
        cores = _by(series, "cpu_core_usage_ratio", "cpu")
        per_core = "  ".join(f"{k}: {_pct(v)}" for k, v in sorted(cores.items(), key=_core))
        lines.append(f"  usage {_pct(total)}" + (f"   per core  {per_core}" if per_core else ""))
    loads = [_one(series, n) for n in ("load1", "load5", "load15")]
    if all(v is not None for v in loads):
        lines.append("  load  " + " ".join(f"{v:.2f}" for v in loads if v is not None))
    return "\n".join(lines)


def _core(item: tuple[str, float]) -> tuple[int, str]:
    return (int(item[0]), "") if item[0].isdigit() else (0, item[0])


def _memory(series: _Series) -> str:
    total = _one(series, "memory_total_bytes")
    if total is None:
        return ""
    used = _one(series, "memory_used_bytes") or 0.0
    lines = [
        "MEMORY",
        f"  used {human_bytes(used)} of {human_bytes(total)} "
        f"({_pct(_one(series, 'memory_used_ratio') or 0.0)}), "
        f"available {human_bytes(_one(series, 'memory_available_bytes') or 0.0)}",
    ]
    swap_total = _one(series, "swap_total_bytes")
    if swap_total:
        swap_used = _one(series, "swap_used_bytes") or 0.0
        ratio = _one(series, "swap_used_ratio") or 0.0
        lines.append(
            f"  swap {human_bytes(swap_used)} of {human_bytes(swap_total)} ({_pct(ratio)})"
        )
    elif swap_total is not None:
        lines.append("  swap none")
    return "\n".join(lines)


def _filesystems(series: _Series) -> str:
    rows = []
    for labels, size in series.get("filesystem_size_bytes", []):
        mp = labels.get("mountpoint", "")

        def get(name: str, mp: str = mp) -> float | None:
            return _by(series, name, "mountpoint").get(mp)

        free, avail = get("filesystem_free_bytes") or 0.0, get("filesystem_avail_bytes") or 0.0
        files, files_free = get("filesystem_files"), get("filesystem_files_free")
        inodes = _pct((files - files_free) / files) if files and files_free is not None else "-"
        rows.append(
            [
                mp,
                labels.get("fstype", ""),
                labels.get("device", ""),
                human_bytes(size),
                human_bytes(size - free),
                human_bytes(avail),
                _pct(get("filesystem_used_ratio") or 0.0),
                inodes,
            ]
        )
    if not rows:
        return ""
    headers = ["Mounted on", "Type", "Device", "Size", "Used", "Avail", "Use%", "Inodes%"]
    return "FILESYSTEMS\n" + _table(headers, sorted(rows), right={3, 4, 5, 6, 7})


def _counter_table(title: str, series: _Series, columns: Sequence[tuple[str, str, bool]]) -> str:
    values = {name: _by(series, name, "device") for _, name, _ in columns}
    devices = sorted(set().union(*values.values()))
    if not devices:
        return ""
    rows = [
        [dev]
        + [
            human_bytes(values[name].get(dev, 0.0))
            if is_bytes
            else f"{values[name].get(dev, 0):.0f}"
            for _, name, is_bytes in columns
        ]
        for dev in devices
    ]
    headers = ["Device", *(h for h, _, _ in columns)]
    return f"{title} (totals since boot)\n" + _table(headers, rows, set(range(1, len(headers))))


def _disks(series: _Series) -> str:
    columns = [
        ("Read", "disk_read_bytes_total", True),
        ("Written", "disk_written_bytes_total", True),
        ("Reads", "disk_reads_completed_total", False),
        ("Writes", "disk_writes_completed_total", False),
    ]
    return _counter_table("DISKS", series, columns)


def _network(series: _Series) -> str:
    columns = [
        ("Received", "network_receive_bytes_total", True),
        ("Sent", "network_transmit_bytes_total", True),
        ("Pkts in", "network_receive_packets_total", False),
        ("Pkts out", "network_transmit_packets_total", False),
        ("Err in", "network_receive_errors_total", False),
        ("Err out", "network_transmit_errors_total", False),
    ]
    return _counter_table("NETWORK", series, columns)


def _sensors(series: _Series) -> str:
    lines = [
        f"  {labels.get('chip', '')} {labels.get('sensor', '')}: {value:.1f} °C"
        for labels, value in series.get("temperature_celsius", [])
    ]
    charge = _one(series, "battery_charge_ratio")
    if charge is not None:
        plugged = _one(series, "battery_power_plugged")
        state = {None: "", 1.0: ", plugged in", 0.0: ", on battery"}.get(plugged, "")
        lines.append(f"  battery {_pct(charge)}{state}")
    return "SENSORS\n" + "\n".join(lines) if lines else ""


def _processes(title: str, procs: Sequence[ProcessSample]) -> str:
    if not procs:
        return ""
    rows = [
        [
            str(p.pid),
            p.username,
            _cores(p.cpu_ratio),
            human_bytes(p.memory_rss_bytes),
            p.name,
            _short(p.cmdline, 60),
        ]
        for p in procs
    ]
    headers = ["PID", "User", "CPU cores", "RSS", "Name", "Command"]
    return f"{title}\n" + _table(headers, rows, right={0, 2, 3})


def _short(text: str, width: int) -> str:
    flat = " ".join(text.split())  # command lines can hold newlines and tabs
    return flat if len(flat) <= width else flat[: width - 3] + "..."


def _local_checks(series: _Series) -> str:
    """Process and service checks, and what the textfile collector took or skipped."""
    lines = [
        f"  process check {escape(check)}: {value:.0f} matching"
        for check, value in sorted(_by(series, "processes_matching", "check").items())
    ]
    states: dict[str, list[str]] = defaultdict(list)
    for name, key in (("service_state", "state"), ("service_start_mode", "start_mode")):
        for labels, value in series.get(name, []):
            if value == 1.0:
                states[labels.get("service", "")].append(labels.get(key, ""))
    services = {labels.get("service", "") for labels, _ in series.get("service_state", [])}
    for service in sorted(services):
        shown = ", ".join(states[service]) or "not installed"
        lines.append(f"  service {escape(service)}: {escape(shown)}")
    files = series.get("agent_textfile_age_seconds", [])
    if files:
        extras = sum(len(v) for name, v in series.items() if name not in catalogue.BY_NAME)
        skipped = {
            labels.get("reason", ""): value
            for labels, value in series.get("agent_textfile_files_skipped_total", [])
            if value
        }
        line = f"  textfiles: {len(files)} file(s), {extras} series"
        if skipped:
            line += ", skipped so far: " + ", ".join(f"{k} {v:.0f}" for k, v in skipped.items())
        lines.append(line)
    return "LOCAL CHECKS\n" + "\n".join(lines) if lines else ""


def _agent(c: Collection, series: _Series) -> str:
    duration = _one(series, "agent_collect_duration_seconds")
    line = "AGENT\n  collect took " + (f"{duration * 1000:.0f} ms" if duration is not None else "?")
    failing = {name: n for name, n in sorted(c.probe_errors.items()) if n}
    if failing:
        line += ", probe errors: " + ", ".join(f"{k} {v}" for k, v in failing.items())
    return line
