"""The agent's enrolled identity, kept in its state directory (owner-only permissions)."""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path


class IdentityError(Exception):
    def __init__(self, path: Path, reason: str) -> None:
        self.path = path
        super().__init__(f"{path}: {reason}")


@dataclass(frozen=True)
class Identity:
    agent_id: str
    credential: str
    customer: str

    def __repr__(self) -> str:  # never print the secret
        return f"Identity(agent_id={self.agent_id!r}, customer={self.customer!r})"


def load(path: Path) -> Identity | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise IdentityError(
            path, f"unreadable identity file ({exc}); delete it to re-enroll"
        ) from None
    try:
        return Identity(
            agent_id=str(data["agent_id"]),
            credential=str(data["credential"]),
            customer=str(data["customer"]),
        )
    except (KeyError, TypeError):
        raise IdentityError(path, "identity file lacks agent_id/credential/customer") from None


def save(path: Path, identity: Identity) -> None:
    """Write atomically: a crash leaves the old file or the new one, never half of one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        # The mode given to open() only applies to a new file; a leftover .tmp keeps its own.
        if hasattr(os, "fchmod"):
            os.fchmod(f.fileno(), 0o600)
        json.dump(asdict(identity), f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
