"""The pure diff, tested with data: desired + live + managed -> expected changes."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kfmops.desired.collector import DesiredReference
from kfmops.plans.diff import diff
from kfmops.plans.model import Action, Change
from kfmops.references import Reference

ORDER = ("stac", "graph", "search", "cache")


def cache_ref(name: str) -> Reference:
    return Reference(f"cache_key.{name}", "cache", "local", {"key": f"kfm:{name}", "invalidate": []})


def part(dataset: str, kind: str) -> Reference:
    locators = {
        "stac": {"slots": [{"document": f"{dataset}/v1/collection.json", "field": "deprecated", "scope": None}]},
        "graph": {
            "from": {"label": "Dataset", "key": "id", "id": dataset},
            "type": "CURRENT_VERSION",
            "to": {"label": "DatasetVersion", "key": "id"},
        },
        "search": {"alias": f"kfm-{dataset}"},
        "cache": {"key": f"kfm:dataset:{dataset}:current", "invalidate": []},
    }
    return Reference(f"dataset.{dataset}.{kind}", kind, "local", locators[kind], dataset=dataset)


def want(reference: Reference, value: Any, source: str = "desired/x.yaml:7") -> dict[str, DesiredReference]:
    return {reference.address: DesiredReference(reference, value, source)}


def only(changes: list[Change]) -> Change:
    assert len(changes) == 1, changes
    return changes[0]


A = cache_ref("a")


@pytest.mark.parametrize(
    ("desired", "live", "managed", "action", "before", "after", "reason"),
    [
        pytest.param("v2", None, None, Action.CREATE, None, "v2", "absent; desired state adds it", id="create"),
        pytest.param(
            "v2", None, "v1", Action.CREATE, None, "v2", "deleted outside kfmops", id="create-after-outside-delete"
        ),
        pytest.param("v2", "v1", "v1", Action.UPDATE, "v1", "v2", "desired value changed", id="update-desired"),
        pytest.param("v2", "v3", "v1", Action.UPDATE, "v3", "v2", "drifted", id="update-drift"),
        pytest.param("v2", "v1", None, Action.UPDATE, "v1", "v2", "not managed yet; kfmops adopts", id="adopt"),
        pytest.param("v2", "v2", "v2", Action.NOOP, "v2", "v2", "up to date", id="no-op"),
        pytest.param("v2", "v2", None, Action.NOOP, "v2", "v2", "up to date", id="no-op-unmanaged-equal"),
        pytest.param("v2", "v2", "v1", Action.NOOP, "v2", "v2", "up to date", id="no-op-drifted-to-desired"),
    ],
)
def test_desired_reference(desired, live, managed, action, before, after, reason):
    managed_map = {} if managed is None else {A.address: (A, managed)}
    change = only(diff(want(A, desired), {A.address: live}, managed_map, ORDER))
    assert change.action is action
    assert (change.before, change.after) == (before, after)
    assert reason in change.reason
    assert change.reference == A
    assert change.source == "desired/x.yaml:7"


def test_structured_values_compare_by_value_not_identity():
    search = part("d", "search")
    value = {"indices": ["kfm-d-v1"], "write_index": None}
    change = only(diff(want(search, value), {search.address: dict(value)}, {}, ORDER))
    assert change.action is Action.NOOP


def test_managed_reference_no_longer_desired_is_deleted_with_its_full_live_value():
    change = only(diff({}, {A.address: "v1"}, {A.address: (A, "v1")}, ORDER))
    assert change.action is Action.DELETE
    assert (change.before, change.after) == ("v1", None)
    assert change.reason == "removed from desired state"


def test_delete_says_when_the_live_value_had_drifted():
    change = only(diff({}, {A.address: "v9"}, {A.address: (A, "v1")}, ORDER))
    assert change.action is Action.DELETE
    assert change.before == "v9"  # the compare-and-swap precondition is what is live, not what was applied
    assert "drifted" in change.reason


def test_managed_and_already_absent_is_a_no_op_that_forgets_it():
    change = only(diff({}, {A.address: None}, {A.address: (A, "v1")}, ORDER))
    assert change.action is Action.NOOP
    assert (change.before, change.after) == (None, None)
    assert "stops managing" in change.reason


class RecordingMapping(Mapping[str, Any]):
    """Live values that remember which addresses the diff looked at."""

    def __init__(self, values: dict[str, Any]):
        self.values = values
        self.read: set[str] = set()

    def __getitem__(self, address: str) -> Any:
        self.read.add(address)
        return self.values[address]

    def get(self, address: str, default: Any = None) -> Any:
        self.read.add(address)
        return self.values.get(address, default)

    def __contains__(self, address: object) -> bool:
        self.read.add(str(address))
        return address in self.values

    def __iter__(self) -> Iterator[str]:
        raise AssertionError("the diff must not enumerate live references")

    def __len__(self) -> int:
        raise AssertionError("the diff must not count live references")


def test_never_managed_live_references_are_untouched_and_not_even_read():
    b, stranger = cache_ref("b"), cache_ref("stranger")
    live = RecordingMapping({A.address: "v1", b.address: "v1", stranger.address: "theirs"})
    changes = diff(want(A, "v2"), live, {b.address: (b, "v1")}, ORDER)
    assert {c.address for c in changes} == {A.address, b.address}
    assert stranger.address not in live.read
    assert live.read <= {A.address, b.address}


def test_ordered_by_apply_order_then_address():
    desired: dict[str, DesiredReference] = {}
    for dataset in ("b", "a"):
        for kind in ("cache", "search", "graph", "stac"):
            desired |= want(part(dataset, kind), "x")
    managed = {A.address: (A, "v1")}
    live = {A.address: "v1"}

    changes = diff(desired, live, managed, ORDER)
    assert [c.address for c in changes] == [
        "dataset.a.stac",
        "dataset.b.stac",
        "dataset.a.graph",
        "dataset.b.graph",
        "dataset.a.search",
        "dataset.b.search",
        "cache_key.a",
        "dataset.a.cache",
        "dataset.b.cache",
    ]

    reordered = diff(desired, live, managed, ("cache", "search", "graph", "stac"))
    assert [c.reference.kind for c in reordered] == ["cache"] * 3 + ["search"] * 2 + ["graph"] * 2 + ["stac"] * 2
    assert [c.address for c in reordered][:3] == ["cache_key.a", "dataset.a.cache", "dataset.b.cache"]


def test_reversed_change_swaps_before_and_after():
    change = only(diff(want(A, "v2"), {}, {}, ORDER))
    undo = change.reversed()
    assert undo.action is Action.DELETE
    assert (undo.before, undo.after) == ("v2", None)
    assert undo.reversed().action is Action.CREATE


# Property: for any desired/live/managed maps, the diff covers each address once and reaches desired state.

NAMES = [f"n{i}" for i in range(6)]
VALUES = st.sampled_from(["v1", "v2", "v3"])


@st.composite
def worlds(draw: st.DrawFn) -> tuple[dict[str, DesiredReference], dict[str, Any], dict[str, tuple[Reference, Any]]]:
    references = {name: cache_ref(name) for name in NAMES}
    desired_names = draw(st.sets(st.sampled_from(NAMES)))
    managed_names = draw(st.sets(st.sampled_from(NAMES)))
    live_names = draw(st.sets(st.sampled_from(NAMES)))
    desired = {references[n].address: DesiredReference(references[n], draw(VALUES), "x.yaml:1") for n in desired_names}
    managed = {references[n].address: (references[n], draw(VALUES)) for n in managed_names}
    live = {references[n].address: draw(VALUES) for n in live_names}
    return desired, live, managed


@settings(max_examples=300, deadline=None, database=None)
@given(worlds())
def test_every_address_gets_one_change_and_applying_reaches_desired_state(world):
    desired, live, managed = world
    changes = diff(desired, live, managed, ORDER)

    addresses = [c.address for c in changes]
    assert sorted(addresses) == sorted(set(desired) | set(managed))

    result = dict(live)
    for change in changes:
        assert change.before == live.get(change.address), "before must be the live value (the CAS precondition)"
        if change.action is Action.CREATE:
            assert change.before is None
        if change.action is Action.DELETE:
            assert change.after is None
        if change.action is Action.NOOP:
            assert change.before == change.after
        result[change.address] = change.after

    for address in set(result) | set(desired) | set(managed):
        if address in desired:
            assert result[address] == desired[address].value
        elif address in managed:
            assert result.get(address) is None
        else:
            assert result[address] == live[address], "a never-managed live reference changed"


def test_a_reference_moved_to_another_address_is_forgotten_not_deleted():
    """A dataset's alias now declared as a raw SearchAlias: deleting the old address would delete the alias."""
    old = part("d", "search")
    new = Reference("search_alias.kfm-d", "search", "local", {"alias": "kfm-d"})
    value = {"indices": ["kfm-d-v1"], "write_index": None}
    live = {old.address: value, new.address: value}
    changes = {c.address: c for c in diff(want(new, value), live, {old.address: (old, value)}, ORDER)}
    assert changes[new.address].action is Action.NOOP
    moved = changes[old.address]
    assert moved.action is Action.NOOP
    assert moved.after is None, "apply records None for it: kfmops stops managing the old address"
    assert "moved to search_alias.kfm-d" in moved.reason


KEYS = ["k0", "k1", "k2", "k3"]


@st.composite
def shared_worlds(draw: st.DrawFn) -> tuple[dict[str, Reference], dict[str, Any], set[str], dict[str, str]]:
    """References of which several may own the same live key (moved between addresses); desired ones never do."""
    keys = draw(st.lists(st.sampled_from(KEYS), min_size=len(NAMES), max_size=len(NAMES)))
    references = {
        f"cache_key.{n}": Reference(f"cache_key.{n}", "cache", "local", {"key": k, "invalidate": []})
        for n, k in zip(NAMES, keys, strict=True)
    }
    owned: dict[str, str] = {}
    for address in draw(st.permutations(sorted(references))):
        if draw(st.booleans()) and references[address].locator["key"] not in owned:
            owned[references[address].locator["key"]] = address
    desired = {address: draw(VALUES) for address in owned.values()}
    managed = draw(st.sets(st.sampled_from(sorted(references))))
    store = {key: draw(st.one_of(st.none(), VALUES)) for key in KEYS}
    return references, desired, managed, store


@settings(max_examples=300, deadline=None, database=None)
@given(shared_worlds())
def test_applying_in_plan_order_reaches_desired_state_when_references_share_live_pointers(world):
    references, desired_values, managed_addresses, store = world
    key = {address: reference.locator["key"] for address, reference in references.items()}
    desired = {a: DesiredReference(references[a], v, "x.yaml:1") for a, v in desired_values.items()}
    managed = {a: (references[a], "v1") for a in managed_addresses}
    live = {address: store[key[address]] for address in set(desired) | set(managed)}

    after = dict(store)
    for change in diff(desired, live, managed, ORDER):
        if change.action.mutates:
            assert change.before == live[change.address]
            after[key[change.address]] = change.after

    for address, value in desired_values.items():
        assert after[key[address]] == value, f"{address} does not hold its desired value"
    for address in managed_addresses - set(desired):
        if key[address] not in {key[a] for a in desired}:
            assert after[key[address]] is None, f"{address} was removed from desired state but is still live"
    untouched = set(KEYS) - {key[a] for a in set(desired) | managed_addresses}
    assert {k: after[k] for k in untouched} == {k: store[k] for k in untouched}
