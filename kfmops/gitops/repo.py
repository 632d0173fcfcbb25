"""git access through gitpython: which commit the desired state is at, and reading it at any commit."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
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
    return sorted((f"{ref}:{blob.path}", blob.data_stream.read().decode("utf-8")) for blob in _yaml_blobs(path, ref))


def holds(path: Path, ref: str, files: Sequence[tuple[Path, str]]) -> bool:
    """Whether the YAML files under `path` at git `ref` are `files` ((path, text) in the work tree), no more, no
    fewer, byte for byte: compared by git blob id, without reading the commit's files."""
    try:
        committed = {blob.path: blob.hexsha for blob in _yaml_blobs(path, ref)}
    except InputError:
        return False
    repo = _repository(path)
    assert repo is not None  # _yaml_blobs found it
    top = _work_tree(repo).resolve()
    present = {}
    for file, text in files:
        data = text.encode("utf-8")
        present[file.resolve().relative_to(top).as_posix()] = hashlib.sha1(
            b"blob %d\0%b" % (len(data), data)
        ).hexdigest()
    return present == committed


def _yaml_blobs(path: Path, ref: str) -> list[Any]:
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
    return [
        blob for blob in tree.traverse() if isinstance(blob, _git().Blob) and str(blob.path).endswith((".yaml", ".yml"))
    ]


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


def subject(path: Path, commit: str | None = None) -> str | None:
    """The subject line of `commit` (default: HEAD) in the repository holding `path`; None outside one,
    or when the commit is unknown there (a plan made in another clone)."""
    repo = _repository(path)
    if repo is None:
        return None
    try:
        message = repo.commit(commit or "HEAD").message
    except (_git().BadName, ValueError):
        return None
    text = message.decode("utf-8", "replace") if isinstance(message, bytes) else message
    return text.strip().splitlines()[0] if text.strip() else None


def remote_url(path: Path, name: str = "origin") -> str | None:
    """The URL of remote `name` (else the first remote) of the repository holding `path`; None without one."""
    repo = _repository(path)
    if repo is None or not repo.remotes:
        return None
    remote = next((r for r in repo.remotes if r.name == name), repo.remotes[0])
    urls = list(remote.urls)
    return urls[0] if urls else None
