"""How a group ticket names its PCs."""

from __future__ import annotations

from tripline.alerts.engine import AlertKey
from tripline.alerts.grouping import Firing
from tripline.collector.grouptickets import pc_names


def firing(agent_id: str, hostname: str) -> Firing:
    key = AlertKey(agent_id, "AgentOffline", ())
    return Firing(key, "acme", "hq", hostname, 0.0, 40.0, f"{hostname} down")


def test_pcs_are_named_by_host_name() -> None:
    assert pc_names([firing("agt_b", "pc-02"), firing("agt_a", "pc-01")]) == "pc-01, pc-02"


def test_pcs_sharing_a_host_name_are_each_named_with_their_agent_id() -> None:
    # a cloned disk image: three PCs called "vm" are three PCs, not one
    named = pc_names([firing("agt_3", "vm"), firing("agt_1", "vm"), firing("agt_2", "pc-9")])
    assert named == "pc-9, vm (agt_1), vm (agt_3)"


def test_a_long_list_says_how_many_more() -> None:
    pcs = [firing(f"agt_{i:02}", f"pc-{i:02}") for i in range(25)]
    assert pc_names(pcs).endswith("pc-19 and 5 more")
