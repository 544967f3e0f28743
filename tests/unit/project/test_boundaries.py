"""Dependencies point one way: agent and collector never import each other.

The office PC installs the agent distribution alone (agent/ + protos/), so an import of
collector code from agent code would fail there, and the reverse would drag the agent's
probes into the server. Both may import ``tripline.common`` and ``tripline.v1``, which
import neither; ``tripline.alerts`` is the collector's.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]

# package root -> tripline packages it must never import
FORBIDDEN = {
    "agent/src/tripline/agent": ("tripline.collector", "tripline.alerts"),
    "collector/src/tripline/collector": ("tripline.agent",),
    "alerts/src/tripline/alerts": ("tripline.agent", "tripline.collector"),
    "protos/src/tripline/common": ("tripline.agent", "tripline.collector", "tripline.alerts"),
    "protos/src/tripline/v1": ("tripline.agent", "tripline.collector", "tripline.alerts"),
}


def imported_modules(path: Path) -> list[tuple[int, str]]:
    """Every module an import statement in ``path`` names, lazy imports included."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.lineno, node.module))
    return found


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_no_import_crosses_a_boundary(package: str) -> None:
    files = sorted((ROOT / package).rglob("*.py"))
    assert files, f"{package} holds no Python files: the layout changed, update this test"
    crossings = [
        f"{path.relative_to(ROOT)}:{line}: {module}"
        for path in files
        for line, module in imported_modules(path)
        if any(module == f or module.startswith(f + ".") for f in FORBIDDEN[package])
    ]
    assert crossings == []


def test_the_checker_sees_lazy_imports(tmp_path: Path) -> None:
    sample = tmp_path / "m.py"
    sample.write_text(
        "def f():\n    from tripline.collector import app\n    import tripline.agent.x\n"
    )
    assert imported_modules(sample) == [(2, "tripline.collector"), (3, "tripline.agent.x")]
