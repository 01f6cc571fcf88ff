"""Properties of the summary merge (cirrus/summary.py), on generated records and summaries."""

from __future__ import annotations

import copy
import json

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cirrus.canonical import digest
from cirrus.summary import (
    empty_summary,
    merge,
    parse_summary,
    published_ids,
    render_summary,
)

SOURCES = ["a", "b", "c", "gs://x/aff", "gs://y/seg", "tracer annotation"]
times = st.integers(0, 50).map(lambda t: f"2024-01-01T00:00:{t:02d}.000000+00:00")
texts = st.text(alphabet="ab ;\n\u00e9", min_size=1, max_size=8).filter(lambda t: t.strip())
note = st.fixed_dictionaries(
    {"kind": st.sampled_from(["motivation", "result", "generic"]), "text": texts, "time": times}
)


@st.composite
def processes(draw):
    process = {
        "description": draw(st.sampled_from(["watershed", "agglomerate"])),
        "parameters": draw(st.dictionaries(st.sampled_from("xyz"), st.integers(0, 2), max_size=2)),
        "envs": draw(st.lists(st.sampled_from(["0" * 64, "1" * 64]), max_size=1)),
    }
    return {**process, "digest": digest(process)}


@st.composite
def records(draw):
    record = {
        "session": draw(st.sampled_from(["s1", "s2", "s3"])),
        "started": draw(times),
        "ended": draw(times),
        "status": draw(st.sampled_from(["committed", "failed"])),
        "sources": list(dict.fromkeys(draw(st.lists(st.sampled_from(SOURCES), max_size=5)))),
        "process": draw(st.none() | processes()),
        "notes": draw(st.lists(note, max_size=3)),
    }
    return digest(record), record


record_sets = st.lists(records(), max_size=6, unique_by=lambda item: item[0]).map(dict)

foreign_entries = st.lists(
    st.fixed_dictionaries(
        {
            "method": st.sampled_from(["downsample", {"task": "DownsampleTask", "mip": 0}]),
            "by": st.sampled_from(["igneous", "someone@lab.org"]),
        }
    ),
    max_size=3,
)


@st.composite
def summaries(draw):
    summary = empty_summary()
    if draw(st.booleans()):
        summary["description"] = draw(st.text(alphabet="Raw EM aligned", max_size=20))
        summary["owners"] = draw(st.lists(st.sampled_from(["x@lab.org", "y@lab.org"]), unique=True))
        summary["sources"] = draw(st.lists(st.sampled_from(SOURCES), unique=True, max_size=3))
        summary["processing"] = draw(foreign_entries)
        summary["extra"] = {"kept": draw(st.integers())}
    if draw(st.booleans()):  # an earlier cirrus merge
        summary = merge(summary, draw(record_sets))
    return summary


def in_fold_order(records: dict) -> list:
    return sorted(records.items(), key=lambda item: (item[1]["started"], item[0]))


COMMON = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@COMMON
@given(summaries(), record_sets)
def test_merge_is_idempotent(summary, records):
    once = merge(summary, records)
    assert merge(once, records) == once
    assert merge(once, {}) == once
    assert published_ids(once) == published_ids(summary) | set(records)
    assert parse_summary(render_summary(once), "mem://b/l") == once  # stays a valid summary


@COMMON
@given(summaries(), record_sets, st.data())
def test_merge_is_independent_of_the_order_records_are_given(summary, records, data):
    shuffled = dict(data.draw(st.permutations(list(records.items()))))
    assert merge(summary, shuffled) == merge(summary, records)


@COMMON
@given(summaries(), record_sets)
def test_merge_does_not_change_its_input(summary, records):
    before = copy.deepcopy(summary)
    merge(summary, records)
    assert summary == before


@COMMON
@given(summaries(), record_sets)
def test_sources_keep_their_order_without_duplicates(summary, records):
    merged = merge(summary, records)
    expected = list(summary["sources"])
    for rid, record in in_fold_order(records):
        if rid in published_ids(summary):
            continue
        expected += [source for source in record["sources"] if source not in expected]
    assert merged["sources"] == expected
    assert len(set(merged["sources"])) == len(merged["sources"])


@COMMON
@given(records())
def test_one_record_on_an_empty_summary_keeps_its_sources_in_order(item):
    rid, record = item
    assert merge(empty_summary(), {rid: record})["sources"] == record["sources"]


@COMMON
@given(summaries(), record_sets)
def test_foreign_entries_are_kept(summary, records):
    merged = merge(summary, records)
    n = len(summary["processing"])
    assert merged["processing"][:n] == summary["processing"]
    assert merged["description"].startswith(summary["description"])
    assert merged["owners"] == summary["owners"]
    assert merged["sources"][: len(summary["sources"])] == summary["sources"]
    assert merged.get("extra") == summary.get("extra")


@COMMON
@given(summaries(), record_sets)
def test_each_process_is_listed_once_and_every_record_is_pointed_to(summary, records):
    merged = merge(summary, records)
    digests = [e["cirrus_process"] for e in merged["processing"] if "cirrus_process" in e]
    assert len(digests) == len(set(digests))
    for record in records.values():
        if record["process"]:
            assert record["process"]["digest"] in digests
    pointers = merged["cirrus"]["records"]
    assert len(pointers) == len({p["id"] for p in pointers})
    assert pointers == sorted(pointers, key=lambda p: (p["started"], p["id"]))
    # a note's text is always shown on one line of the description, whatever it contains
    for record in records.values():
        for note_json in record["notes"]:
            shown = note_json["text"].replace(";", "\uff1b").replace("\n", "\u21b5")
            assert f"{note_json['kind'].upper()};{shown}" in merged["description"]


def test_non_finite_numbers_another_tool_wrote_are_written_back_as_they_were():
    # Python's json writes NaN and Infinity by default; orjson would turn them into null
    foreign = b'{"processing": [{"task": "igneous", "parameters": {"a": NaN, "b": -Infinity}}]}'
    summary = parse_summary(foreign, "mem://x")
    rendered = render_summary(merge(summary, {}))
    assert b'"a": NaN' in rendered and b'"b": -Infinity' in rendered
    again = parse_summary(rendered, "mem://x")["processing"][0]["parameters"]
    assert again["a"] != again["a"] and again["b"] == float("-inf")


def test_summaries_render_as_cloudvolume_writes_them():
    summary = {"sources": ["é"], "processing": [{"parameters": {"x": 0.25, "n": 2**70}}]}
    assert render_summary(summary) == json.dumps(
        summary, sort_keys=True, indent=2, ensure_ascii=False
    ).encode("utf-8")


def _step_record(ended: str, count: int, committed: int) -> dict:
    return {
        "session": "step-1",
        "step": "step-1",
        "status": "committed" if committed == count else "failed",
        "started": "2026-01-01T00:00:00.000000Z",
        "ended": ended,
        "sources": [],
        "notes": [],
        "process": None,
        "tasks": {"count": count, "committed": committed},
    }


def test_a_steps_later_finish_supersedes_the_earlier_by_tasks_before_end_time_or_id():
    """Ids are hashes and a late fragment may have ended first: neither says which is newer."""
    t = "2026-01-01T01:00:00.000000Z"
    earlier = t.replace("01:00", "00:59")
    finishes = {
        "f" * 64: _step_record(t, 1, 1),  # first finish: one task
        "e" * 64: _step_record(t, 2, 1),  # a late failed task, same end time
        "d" * 64: _step_record(earlier, 2, 2),  # the failed task re-run, ending earlier
    }
    for order in (list(finishes), list(reversed(finishes))):
        summary = empty_summary()
        for rid in order:
            summary = merge(summary, {rid: finishes[rid]})
        pointers = summary["cirrus"]["records"]
        assert {p["id"]: p.get("superseded_by") for p in pointers} == {
            "f" * 64: "d" * 64,
            "e" * 64: "d" * 64,
            "d" * 64: None,
        }


def test_of_two_finishes_with_the_same_counts_the_committed_one_stands():
    """Pointers written before `missing` was kept: an incomplete finish and the complete one
    after it can tie on everything else; a complete finish is never the older."""
    t = "2026-01-01T01:00:00.000000Z"
    incomplete = {**_step_record(t, 1, 1), "status": "failed"}
    complete = _step_record(t, 1, 1)
    for order in (("f" * 64, "e" * 64), ("e" * 64, "f" * 64)):
        records = dict(zip(order, (incomplete, complete), strict=True))
        pointers = merge(empty_summary(), records)["cirrus"]["records"]
        standing = [p["id"] for p in pointers if "superseded_by" not in p]
        assert standing == [order[1]]
