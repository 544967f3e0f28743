"""One storage style: the table modules' functions take a connection; `Store` gives
connections (`transaction()`, `read()`) and does not forward to those functions."""

from __future__ import annotations

import importlib
import inspect
from types import ModuleType

from tripline.collector.store import Store

# The modules that hold what is stored, one per table family (see store.py's docstring).
TABLE_MODULES = [
    importlib.import_module(f"tripline.collector.{name}")
    for name in (
        "agent_instances",
        "agents_store",
        "alert_states",
        "apitokens",
        "delivery_parking",
        "enrollment",
        "maintenance",
        "suppression",
        "tickets",
    )
]


def _public_functions(module: ModuleType) -> set[str]:
    return {
        name
        for name, value in vars(module).items()
        if inspect.isfunction(value)
        and value.__module__ == module.__name__
        and not name.startswith("_")
    }


def test_store_does_not_forward_to_the_table_modules() -> None:
    forwarded = {
        f"{module.__name__.rsplit('.', 1)[1]}.{name}"
        for module in TABLE_MODULES
        for name in _public_functions(module)
        if name in vars(Store)
        or (module.__name__.endswith(".alert_states") and f"{name}_alert_states" in vars(Store))
    }
    assert forwarded == set(), "call the table module's function with a connection instead"
