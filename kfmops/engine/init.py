"""Init: make a folder a workspace, or prepare an existing one — mint the state lineage, open every
routed backend (the local one seeds itself)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from kfmops.engine.session import Session
from kfmops.stores.state import State
from kfmops.workspace import load_workspace, scaffold


@dataclass(frozen=True)
class Initialized:
    root: Path
    created: list[str]
    state: State
    backends: list[str]


def init(directory: Path) -> Initialized:
    created = scaffold(directory)
    workspace = load_workspace(directory)
    with Session(workspace, "init") as session, session.lock.held("init", None, 0):
        state = session.state()
        if state is None:
            state = State.new()
            session.lock.check_fence()
            session.stores.state.save(state)
        backends = session.providers.open_routed()
    return Initialized(workspace.root, created, state, backends)
