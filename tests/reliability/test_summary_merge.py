"""Summary merge properties not covered in tests/test_session_summary.py: any order and any
partition of the records gives the same summary content; re-merging is a no-op; each record's
new sources keep their order; entries cirrus did not write survive every partition."""

from __future__ import annotations

import json

from hypothesis import given
from hypothesis import strategies as st

from cirrus.summary import NOTE_SEP, merge
from tests.test_session_summary import COMMON, in_fold_order, record_sets, summaries


def content(summary: dict) -> dict:
    """What must not depend on how records were grouped: sets, plus the pointer list."""
    return {
        "sources": set(summary["sources"]),
        "processing": {json.dumps(e, sort_keys=True) for e in summary["processing"]},
        "notes": {tuple(line.split(";", 2)[1:]) for line in summary["description"].split(NOTE_SEP)},
        "pointers": summary.get("cirrus", {}).get("records", []),
        "owners": summary["owners"],
    }


@st.composite
def partitions(draw, records: dict) -> list[dict]:
    """`records` split into 1-4 groups, in a random order."""
    items = draw(st.permutations(list(records.items())))
    labels = [draw(st.integers(0, 3)) for _ in items]
    groups: dict[int, dict] = {}
    for label, (rid, record) in zip(labels, items, strict=True):
        groups.setdefault(label, {})[rid] = record
    return draw(st.permutations(list(groups.values())))


def merge_in_groups(summary: dict, groups: list[dict]) -> dict:
    for group in groups:
        summary = merge(summary, group)
    return summary


@COMMON
@given(summaries(), record_sets, st.data())
def test_any_order_and_partition_gives_the_same_content(summary, records, data):
    at_once = merge(summary, records)
    groups = data.draw(partitions(records))
    in_groups = merge_in_groups(summary, groups)
    reversed_groups = merge_in_groups(summary, list(reversed(groups)))
    assert content(in_groups) == content(at_once) == content(reversed_groups)
    assert content(in_groups)["pointers"] == content(at_once)["pointers"]  # identical lists


@COMMON
@given(summaries(), record_sets, st.data())
def test_re_merging_any_part_changes_nothing(summary, records, data):
    merged = merge(summary, records)
    for group in data.draw(partitions(records)):
        assert merge(merged, group) == merged
    assert merge(merge(merged, records), records) == merged


@COMMON
@given(summaries(), record_sets, st.data())
def test_each_records_new_sources_keep_their_order(summary, records, data):
    groups = data.draw(partitions(records))
    merged = merge_in_groups(summary, groups)
    seen = set(summary["sources"])
    published = {p["id"] for p in summary.get("cirrus", {}).get("records", [])}
    for group in groups:
        for rid, record in in_fold_order(group):
            if rid in published:
                continue
            new = [s for s in record["sources"] if s not in seen]
            positions = [merged["sources"].index(s) for s in new]
            assert positions == sorted(positions)
            seen.update(new)


@COMMON
@given(summaries(), record_sets, st.data())
def test_foreign_entries_survive_every_partition(summary, records, data):
    merged = merge_in_groups(summary, data.draw(partitions(records)))
    foreign = [e for e in summary["processing"] if "cirrus_process" not in e]
    assert [e for e in merged["processing"] if "cirrus_process" not in e] == foreign
    assert merged["processing"][: len(summary["processing"])] == summary["processing"]
    assert merged["description"].startswith(summary["description"])
    assert merged["owners"] == summary["owners"]
    assert merged.get("extra") == summary.get("extra")
