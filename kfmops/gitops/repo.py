"""git access through gitpython: which commit the desired state is at, and reading it at any commit."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from kfmops.errors import Diagnostic, InputError

if TYPE_CHECKING:
    import git


def _git() -> Any:
    """gitpython, imported on first use (0.1-0.3 s: not worth paying in --help or validate)."""
    import git

    return git


def _repository(path: Path) -> git.Repo | None:
    gitpython = _git()
    try:
        repository: git.Repo = gitpython.Repo(path, search_parent_directories=True)
        return repository
    except (gitpython.InvalidGitRepositoryError, gitpython.NoSuchPathError):
        return None


def _work_tree(repo: git.Repo) -> Path:
    """The repository's work tree (kfmops reads desired state from a checkout, never a bare repository)."""
    assert repo.working_tree_dir is not None
    return Path(repo.working_tree_dir)


def describe(path: Path) -> dict[str, Any]:
    """{commit, branch, dirty} of the repository holding `path`; empty outside a repository.

    `dirty` is about `path` only: changes elsewhere in the repository do not make a plan dirty.
    """
    repo = _repository(path)
    if repo is None:
        return {}
    try:
        commit = repo.head.commit.hexsha
    except ValueError:
        commit = None
    branch = None if repo.head.is_detached else repo.active_branch.name
    relative = str(path.resolve().relative_to(_work_tree(repo).resolve())) or "."
    dirty = repo.is_dirty(untracked_files=True, path=relative)
    return {"commit": commit, "branch": branch, "dirty": dirty}


def files_at(path: Path, ref: str) -> list[tuple[str, str]]:
    """(path, text) of every YAML file under `path` as it was at git `ref`, without a checkout."""
    repo = _repository(path)
    if repo is None:
        raise InputError([Diagnostic(f"{path} is not inside a git repository", "--git-ref needs one")])
    try:
        commit = repo.commit(ref)
    except (_git().BadName, ValueError):
        raise InputError([Diagnostic(f"git ref {ref!r} does not exist", "use a branch, tag or commit")]) from None
    top = _work_tree(repo).resolve()
    prefix = str(path.resolve().relative_to(top))
    try:
        tree = commit.tree / prefix if prefix != "." else commit.tree
    except KeyError:
        raise InputError([Diagnostic(f"{prefix} does not exist at {ref}")]) from None
    return sorted(
        (f"{ref}:{blob.path}", blob.data_stream.read().decode("utf-8"))
        for blob in tree.traverse()
        if isinstance(blob, _git().Blob) and str(blob.path).endswith((".yaml", ".yml"))
    )


def commit_of(path: Path, ref: str) -> str:
    repo = _repository(path)
    assert repo is not None
    return repo.commit(ref).hexsha


def changed_files(path: Path, base: str, head: str | None = None) -> list[Path]:
    """Desired-state files under `path` that differ between `base` and `head` (default: the work tree)."""
    repo = _repository(path)
    if repo is None:
        raise InputError([Diagnostic(f"{path} is not inside a git repository", "--base needs one")])
    try:
        repo.commit(base)
    except (_git().BadName, ValueError):
        raise InputError([Diagnostic(f"git ref {base!r} does not exist", "use a branch, tag or commit")]) from None
    top = _work_tree(repo).resolve()
    prefix = str(path.resolve().relative_to(top))
    names = repo.git.diff("--name-only", base, *([head] if head else []), "--", prefix).splitlines()
    if head is None:
        names += repo.git.ls_files("--others", "--exclude-standard", "--", prefix).splitlines()
    return sorted({top / name for name in names if name.endswith((".yaml", ".yml"))})


def is_on_branch(path: Path, commit: str, branch: str) -> bool:
    """True when `commit` is reachable from `branch` (merged into it)."""
    repo = _repository(path)
    if repo is None:
        return False
    try:
        # GitPython annotates Commit, but hands both revs to `git merge-base` as they are: names work.
        return repo.is_ancestor(commit, branch)  # type: ignore[arg-type]
    except _git().GitCommandError:
        return False
