"""The store a command opens from --config/--data-dir/--database-url."""

from __future__ import annotations

import argparse
import contextlib
from collections.abc import Iterator
from typing import TYPE_CHECKING

from tripline.collector.cli.errors import CliError

if TYPE_CHECKING:
    from tripline.collector.store import Store


@contextlib.contextmanager
def open_store(args: argparse.Namespace) -> Iterator[Store]:
    """The configured store, migrated, closed on exit; its errors become CliError."""
    # Imported here: only the commands that touch the database pay for SQLAlchemy.
    from tripline.collector.config import load_collector_config
    from tripline.collector.migrations import MigrationError
    from tripline.collector.store import Store, StoreError

    config = load_collector_config(
        args.config, flags={"data_dir": args.data_dir, "database_url": args.database_url}
    )
    if config.database_url is None and not config.database_file.exists():
        raise CliError(
            f"no Tripline database in {config.data_dir}/ (start the collector or the demo "
            "first, or pass --data-dir / --database-url)"
        )
    try:
        store = Store(config.effective_database_url)
        try:
            store.migrate()
            yield store
        finally:
            store.close()
    except (StoreError, MigrationError) as exc:
        raise CliError(str(exc)) from None
