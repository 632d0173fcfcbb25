"""Addresses: parse and print round trip, covers(), and --target/--exclude selection."""

from __future__ import annotations

import pytest

from kfmops.addresses import Address, select

VALID = [
    ("dataset.landcover", Address("dataset", "landcover")),
    ("dataset.landcover-1992.graph", Address("dataset", "landcover-1992", "graph")),
    ("dataset.ds_000001.stac", Address("dataset", "ds_000001", "stac")),
    ("dataset.x.search", Address("dataset", "x", "search")),
    ("dataset.0.cache", Address("dataset", "0", "cache")),
    ("search_alias.kfm-roads", Address("search_alias", "kfm-roads")),
    ("stac_link.catalog-child", Address("stac_link", "catalog-child")),
    ("graph_relationship.county-seat", Address("graph_relationship", "county-seat")),
    ("cache_key.tiles", Address("cache_key", "tiles")),
    ("dataset.stac", Address("dataset", "stac")),  # a dataset may be called like a part
    ("dataset." + "a" * 128, Address("dataset", "a" * 128)),
]


@pytest.mark.parametrize(("text", "address"), VALID)
def test_parse_and_str_round_trip(text, address):
    assert Address.parse(text) == address
    assert str(address) == text
    assert Address.parse(str(Address.parse(text))) == address


@pytest.mark.parametrize(
    "text",
    [
        "",
        "dataset",
        "dataset.",
        ".landcover",
        "landcover",
        "Dataset.landcover",
        "dataset.Landcover",
        "dataset.-landcover",
        "dataset.land cover",
        "dataset.landcover.",
        "dataset.landcover.neo4j",
        "dataset.landcover.graph.extra",
        "datasets.landcover",
        "bucket.landcover",
        " dataset.landcover",
        "dataset.landcover ",
        "dataset.x*",
        "dataset." + "a" * 129,
        "dataset.x;DROP TABLE kv",
    ],
)
def test_invalid_addresses_raise_value_error(text):
    with pytest.raises(ValueError, match="is not an address"):
        Address.parse(text)


def test_trailing_newline_is_not_an_address():
    with pytest.raises(ValueError):
        Address.parse("dataset.landcover\n")


def test_only_datasets_have_parts():
    with pytest.raises(ValueError):
        Address.parse("search_alias.kfm-roads.graph")


@pytest.mark.parametrize(
    ("outer", "inner", "expected"),
    [
        ("dataset.x", "dataset.x", True),
        ("dataset.x", "dataset.x.stac", True),
        ("dataset.x", "dataset.x.cache", True),
        ("dataset.x.stac", "dataset.x.stac", True),
        ("dataset.x.stac", "dataset.x.graph", False),
        ("dataset.x.stac", "dataset.x", False),
        ("dataset.x", "dataset.xy.stac", False),
        ("dataset.xy", "dataset.x.stac", False),
        ("dataset.x", "search_alias.x", False),
        ("search_alias.x", "dataset.x.search", False),
        ("search_alias.x", "search_alias.x", True),
    ],
)
def test_covers(outer, inner, expected):
    assert Address.parse(outer).covers(Address.parse(inner)) is expected


ADDRESSES = [
    "dataset.a.stac",
    "dataset.a.graph",
    "dataset.a.search",
    "dataset.a.cache",
    "dataset.ab.stac",
    "dataset.ab.cache",
    "search_alias.a",
    "cache_key.tiles",
]


@pytest.mark.parametrize(
    ("targets", "excludes", "expected"),
    [
        ([], [], ADDRESSES),
        (["dataset.a"], [], ["dataset.a.stac", "dataset.a.graph", "dataset.a.search", "dataset.a.cache"]),
        (["dataset.a.graph"], [], ["dataset.a.graph"]),
        (["dataset.a.graph", "cache_key.tiles"], [], ["dataset.a.graph", "cache_key.tiles"]),
        (["search_alias.a"], [], ["search_alias.a"]),
        ([], ["dataset.a"], ["dataset.ab.stac", "dataset.ab.cache", "search_alias.a", "cache_key.tiles"]),
        (
            [],
            ["dataset.a.stac", "dataset.ab.stac"],
            [
                "dataset.a.graph",
                "dataset.a.search",
                "dataset.a.cache",
                "dataset.ab.cache",
                "search_alias.a",
                "cache_key.tiles",
            ],
        ),
        (["dataset.a"], ["dataset.a.search"], ["dataset.a.stac", "dataset.a.graph", "dataset.a.cache"]),
        (["dataset.a.search"], ["dataset.a"], []),
        (["dataset.nothing"], [], []),
    ],
)
def test_select_keeps_targets_and_drops_excludes_in_input_order(targets, excludes, expected):
    assert select(ADDRESSES, targets, excludes) == expected


@pytest.mark.parametrize(("targets", "excludes"), [(["dataset"], []), ([], ["dataset.a.b.c"]), (["x y"], [])])
def test_select_rejects_invalid_selectors(targets, excludes):
    with pytest.raises(ValueError, match="is not an address"):
        select(ADDRESSES, targets, excludes)
