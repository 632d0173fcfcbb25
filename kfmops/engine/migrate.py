"""Migrate: move a workspace's state, history, WAL and ledger chain to another store, e.g. from its `state/`
folder to PostgreSQL (`kfmops state migrate --to-config FILE`), under both stores' locks.

Finished WALs are settled first; an unfinished one must be recovered first (exit 6), so that what is copied
is settled. The copy itself is `stores.transfer.copy_stores`, verified by counts and chain heads.
"""

from __future__ import annotations

from kfmops.engine.apply import refuse_if_unfinished
from kfmops.engine.session import Session
from kfmops.engine.settle import settle_finished
from kfmops.errors import KfmopsError
from kfmops.stores.transfer import Copied, copy_stores


def migrate(source: Session, target: Session, lock_timeout: float = 0) -> Copied:
    if source.stores.state.location() == target.stores.state.location():
        raise KfmopsError(f"the target is the source itself ({source.stores.state.location()}); nothing to do")
    with (
        source.lock.held("migrate", None, lock_timeout),
        target.lock.held("migrate", None, lock_timeout),
    ):
        settle_finished(source)
        refuse_if_unfinished(source)
        source.lock.check_fence()
        target.lock.check_fence()
        return copy_stores(source.stores, target.stores)
