"""alerts/ is pure: importing it pulls in the standard library and YAML, nothing else."""

from __future__ import annotations

import json
import subprocess
import sys

PROBE = """
import json, sys
before = set(sys.modules)
import tripline.alerts.rules, tripline.alerts.engine
tripline.alerts.rules.default_rules()  # loading the pack must not import anything more either
print(json.dumps(sorted(set(sys.modules) - before)))
"""

FORBIDDEN = (
    "grpc",
    "psutil",
    "sqlalchemy",
    "logging.config",
    "google.protobuf",
    "tripline.collector",
    "tripline.agent",
)
ALLOWED_THIRD_PARTY = {"tripline", "yaml", "_yaml", "cython_runtime"}


def _is_yaml_c_extension_runtime(name: str) -> bool:
    # PyYAML's libyaml binding is Cython-built and registers its runtime as _cython_X_Y_Z.
    return name.startswith("_cython_")


def test_importing_alerts_loads_only_stdlib_and_yaml() -> None:
    result = subprocess.run(
        [sys.executable, "-c", PROBE], capture_output=True, text=True, check=True, timeout=60
    )
    imported: list[str] = json.loads(result.stdout)
    assert "tripline.alerts.engine" in imported  # the probe really imported something
    for name in FORBIDDEN:
        assert not [m for m in imported if m == name or m.startswith(name + ".")], name
    top_level = {name.split(".")[0] for name in imported}
    foreign = {
        name
        for name in top_level - set(sys.stdlib_module_names) - ALLOWED_THIRD_PARTY
        if not _is_yaml_c_extension_runtime(name)
    }
    assert foreign == set(), f"alerts imports non-stdlib modules: {sorted(foreign)}"
