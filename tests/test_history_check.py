"""history_check on small list-append histories written from the anomalies' definitions: each
anomaly found, and not found once the operation that makes it is made harmless; the models'
forbidden anomalies as Elle's data says; the EDN, JSON and toolclash formats read, and written
back as EDN; bad input refused in one line. No server."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from history_check import BadHistory, UnknownModel, build, check, parse, to_edn
from history_check.edn import loads_all
from history_check.models import anomalies_prohibited_by
from tests.support import ROOT


def history(*txns, overlapping=False):
    """Ops from (type, process, mops) one after the other (each invoked and completed before the
    next), or all invoked before any completes (`overlapping`: no real-time order)."""
    invokes = [{"type": "invoke", "process": p, "value": [[f, k, None if f == "r" else v] for f, k, v in m]}
               for _, p, m in txns]
    completions = [{"type": t, "process": p, "value": m} for t, p, m in txns]
    if overlapping:
        return build(invokes + completions)
    return build([e for pair in zip(invokes, completions) for e in pair])


def ok(*mops, p=None):
    return ("ok", p, list(mops))


def numbered(*txns):
    """Each on a process of its own, overlapping: only data dependencies."""
    return history(*[(t, i if p is None else p, m) for i, (t, p, m) in enumerate(txns)], overlapping=True)


def types(ops, model="serializable"):
    return set(check(ops, model).anomaly_types)


# Each: the anomaly, a history that shows it, the same history with its offending op made harmless.
CASES = {
    "G0": (  # ww both ways: x orders T1 then T2, y orders T2 then T1
        [ok(["append", "x", 1], ["append", "y", 1]), ok(["append", "x", 2], ["append", "y", 2]),
         ok(["r", "x", [1, 2]], ["r", "y", [2, 1]])],
        [ok(["append", "x", 1], ["append", "y", 1]), ok(["append", "x", 2], ["append", "y", 2]),
         ok(["r", "x", [1, 2]], ["r", "y", [1, 2]])]),
    "G1c": (  # each read the other's append
        [ok(["append", "x", 1], ["r", "y", [1]]), ok(["append", "y", 1], ["r", "x", [1]])],
        [ok(["append", "x", 1], ["r", "y", [1]]), ok(["append", "y", 1])]),
    "G-single-item": (  # T2 saw T1's x but not its y
        [ok(["append", "x", 1], ["append", "y", 1]), ok(["r", "x", [1]], ["r", "y", []])],
        [ok(["append", "x", 1], ["append", "y", 1]), ok(["r", "x", [1]], ["r", "y", [1]])]),
    "G2-item": (  # write skew: each read what the other then appended to
        [ok(["r", "x", []], ["append", "y", 1]), ok(["r", "y", []], ["append", "x", 1])],
        [ok(["r", "x", []], ["append", "y", 1]), ok(["r", "y", [1]], ["append", "x", 1])]),
    "G-nonadjacent-item": (  # T1 -rw-> T2 -wr-> T3 -rw-> T4 -wr-> T1
        [ok(["r", "a", []], ["r", "d", [1]]), ok(["append", "a", 1], ["append", "b", 1]),
         ok(["r", "b", [1]], ["r", "c", []]), ok(["append", "c", 1], ["append", "d", 1])],
        [ok(["r", "a", []], ["r", "d", []]), ok(["append", "a", 1], ["append", "b", 1]),
         ok(["r", "b", [1]], ["r", "c", []]), ok(["append", "c", 1], ["append", "d", 1])]),
    "G1a": (
        [("fail", None, [["append", "x", 1]]), ok(["r", "x", [1]])],
        [("fail", None, [["append", "x", 1]]), ok(["r", "x", []])]),
    "G1b": (
        [ok(["append", "x", 1], ["append", "x", 2]), ok(["r", "x", [1]])],
        [ok(["append", "x", 1], ["append", "x", 2]), ok(["r", "x", [1, 2]])]),
    "lost-update": (
        [ok(["r", "x", []], ["append", "x", 1]), ok(["r", "x", []], ["append", "x", 2]), ok(["r", "x", [1, 2]])],
        [ok(["r", "x", []], ["append", "x", 1]), ok(["r", "x", [1]], ["append", "x", 2]), ok(["r", "x", [1, 2]])]),
    "duplicate-elements": (
        [ok(["append", "x", 1]), ok(["r", "x", [1, 1]])],
        [ok(["append", "x", 1]), ok(["r", "x", [1]])]),
    "incompatible-order": (
        [ok(["append", "x", 1]), ok(["append", "x", 2]), ok(["r", "x", [1, 2]]), ok(["r", "x", [2, 1]])],
        [ok(["append", "x", 1]), ok(["append", "x", 2]), ok(["r", "x", [1, 2]]), ok(["r", "x", [1]])]),
    "internal": (
        [ok(["append", "x", 1], ["r", "x", []])],
        [ok(["append", "x", 1], ["r", "x", [1]])]),
    "garbage-read": (  # corrupted: an element read that no one appended
        [ok(["append", "x", 1]), ok(["r", "x", [1, 7]])],
        [ok(["append", "x", 1]), ok(["r", "x", [1]])]),
}


@pytest.mark.parametrize("anomaly", sorted(CASES))
def test_each_anomaly_found_and_gone_without_its_op(anomaly):
    shows, harmless = CASES[anomaly]
    answer = check(numbered(*shows), "serializable")
    assert anomaly in answer.anomaly_types and anomaly in answer.forbidden and answer.valid is False
    assert answer.anomaly_types == sorted(answer.counts) and answer.counts[anomaly] >= 1
    assert check(numbered(*harmless), "serializable").as_dict()["valid"] is True, anomaly


def test_a_cycle_names_its_operations_and_why_each_follows():
    case = check(numbered(*CASES["G-single-item"][0])).cases["G-single-item"][0]
    assert [op["value"] for op in case["cycle"]] in (
        [[["append", "x", 1], ["append", "y", 1]], [["r", "x", [1]], ["r", "y", []]]],
        [[["r", "x", [1]], ["r", "y", []]], [["append", "x", 1], ["append", "y", 1]]])
    steps = {s["type"]: s for s in case["steps"]}
    assert steps["wr"]["key"] == "x" and steps["wr"]["value"] == 1
    assert steps["rw"]["key"] == "y" and steps["rw"]["value'"] == 1


def test_what_each_model_allows_is_reported_not_failed():
    skew = numbered(*CASES["G2-item"][0])
    si = check(skew, "snapshot-isolation")
    assert si.valid is True and si.anomaly_types == ["G2-item"] and si.forbidden == []
    assert si.not_models == ["repeatable-read"]
    assert check(skew, "serializable").valid is False
    single = numbered(*CASES["G-single-item"][0])
    assert check(single, "read-committed").valid is True and check(single, "snapshot-isolation").valid is False
    lost = numbered(*CASES["lost-update"][0])
    assert check(lost, "read-committed").valid is True and check(lost, "snapshot-isolation").valid is False
    nonadjacent = numbered(*CASES["G-nonadjacent-item"][0])
    assert check(nonadjacent, "snapshot-isolation").valid is False and check(nonadjacent, "read-committed").valid


def test_models_forbid_as_elle_says():
    serializable = anomalies_prohibited_by("serializable")
    assert {"G0", "G1a", "G1b", "G1c", "G-single-item", "G-nonadjacent-item", "G2-item", "lost-update", "internal",
            "duplicate-elements", "incompatible-order"} <= serializable
    assert not {"G2-item-process", "G-single-item-realtime"} & serializable
    si = anomalies_prohibited_by("snapshot-isolation")
    assert "G2-item" not in si and {"G-single-item", "G-nonadjacent-item", "lost-update"} <= si
    rc = anomalies_prohibited_by("read-committed")
    assert {"G0", "G1a", "G1b", "G1c"} <= rc and not {"G-single-item", "lost-update", "G2-item"} & rc
    assert "G1a" not in anomalies_prohibited_by("read-uncommitted")
    assert "G2-item-realtime" in anomalies_prohibited_by("strict-serializable")
    assert "G-single-item-process" in anomalies_prohibited_by("strong-session-snapshot-isolation")
    for model in ("read-uncommitted", "read-committed", "repeatable-read", "snapshot-isolation", "serializable",
                  "strict-serializable", "strong-session-serializable", "strong-session-read-committed"):
        assert anomalies_prohibited_by(model)
    with pytest.raises(UnknownModel):
        anomalies_prohibited_by("serialisable")


def test_process_and_realtime_variants():
    # T2 runs after T1 (same process, then real time) yet missed T1's append.
    same_process = history(ok(["append", "x", 1], p=0), ok(["r", "x", []], p=0))
    assert check(same_process, "serializable").valid is True
    assert "G-single-item-process" in check(same_process, "strong-session-serializable").forbidden
    two_processes = history(ok(["append", "x", 1], p=0), ok(["r", "x", []], p=1))
    assert check(two_processes, "strong-session-serializable").valid is True
    strict = check(two_processes, "strict-serializable")
    assert strict.forbidden == ["G-single-item-realtime"] and strict.valid is False
    overlapping = history(ok(["append", "x", 1], p=0), ok(["r", "x", []], p=1), overlapping=True)
    assert check(overlapping, "strict-serializable").valid is True
    assert check(two_processes, "strict-serializable", realtime=False).valid == "unknown"


def test_a_long_cycle_needs_no_recursion():
    n = 5000  # T(i) appends a to key i, then T(i-1) b: T(i) -ww-> T(i-1), round the ring
    txns = [ok(["append", i, "a"], ["append", (i + 1) % n, "b"]) for i in range(n)]
    reads = [ok(["r", i, ["a", "b"]]) for i in range(n)]
    answer = check(numbered(*txns, *reads))
    assert "G0" in answer.anomaly_types and answer.valid is False


EDN = """; a comment
#jepsen.history.Op{:index 0, :type :invoke, :process 0, :f :txn, :value [[:append :x 1] [:r "y" nil]]}
{:index 1 :type :ok :process 0 :f :txn :value [[:append :x 1] [:r "y" []]] :extra #{1 2} :note "a \\"q\\""}
{:index 2, :type :invoke, :process 1, :f :txn, :value [[:r :x nil]] #_ :ignored #_ [1 2]}
{:index 3, :type :ok, :process 1, :f :txn, :value [[:r :x [1]]], :time 12}
"""


def test_edn_and_json_read_alike():
    from_edn = parse(EDN)
    assert [(op.type, op.process, op.mops) for op in from_edn] == [
        ("ok", 0, (("append", "x", 1), ("r", "y", ()))), ("ok", 1, (("r", "x", (1,)),))]
    assert loads_all('[1 -2 3.5 nil true "a\\nb" sym (1 2) {:k [1]}]') == [
        [1, -2, 3.5, None, True, "a\nb", "sym", [1, 2], {"k": [1]}]]
    events = [{"type": "invoke", "process": 0, "f": "txn", "value": [["append", "x", 1], ["r", "y", None]]},
              {"type": "ok", "process": 0, "f": "txn", "value": [["append", "x", 1], ["r", "y", []]]},
              {"type": "invoke", "process": 1, "f": "txn", "value": [["r", "x", None]]},
              {"type": "ok", "process": 1, "f": "txn", "value": [["r", "x", [1]]]}]
    lines = "\n".join(json.dumps(e) for e in events)
    for text in (lines, json.dumps(events), EDN.replace("[[:append :x 1]", "[[:append :x 1]")):
        assert [(op.type, op.mops) for op in parse(text)] == [(op.type, op.mops) for op in from_edn]
    # Elle's own vector form, and an EDN vector of maps
    assert len(parse("[" + EDN.split("\n", 1)[1] + "]")) == 2


def test_written_as_edn_it_reads_back_to_the_same_answer():
    for anomaly in ("G2-item", "G1a", "lost-update"):
        ops = numbered(*CASES[anomaly][0])
        again = parse(to_edn(ops))
        assert check(again).anomaly_types == check(ops).anomaly_types
        assert [op.mops for op in again] == [op.mops for op in ops]


def test_a_toolclash_history_file():
    lines = [
        {"type": "run", "time": 0, "process": "local", "run_id": "r", "seed": 1},
        {"type": "invoke", "time": 1, "tool": "list_append", "op": "a", "lane": "u1/0", "arguments": {}},
        {"type": "ok", "time": 2, "tool": "list_append", "op": "a", "lane": "u1/0", "value": {
            "lane": "u1/0", "attempt": 2, "txn": [["append", "k", "a.2"]], "tried": [[1, [["append", "k", "a.1"]]]]}},
        {"type": "invoke", "time": 3, "tool": "deduct_credits", "op": "c", "lane": "u2/0", "arguments": {}},
        {"type": "invoke", "time": 4, "tool": "list_append", "op": "b", "lane": "u2/0", "arguments": {}},
        {"type": "ok", "time": 5, "tool": "list_append", "op": "b", "lane": "u2/0", "value": {
            "lane": "u2/0", "attempt": 1, "txn": [["r", "k", ["a.1", "a.2"]]], "tried": []}},
    ]
    ops = parse("\n".join(json.dumps(line) for line in lines))
    assert [(op.id, op.type) for op in ops] == [("a#1", "fail"), ("a#2", "ok"), ("b#1", "ok")]
    answer = check(ops)
    assert answer.forbidden == ["G1a"]  # the failed attempt's element was read
    assert answer.cases["G1a"][0]["writer"]["id"] == "a#1"


@pytest.mark.parametrize("text", ["{:type :ok :value [[:write :x 1]]}", "[1 2", '{"type": "ok", "value": 3}',
                                  "{:type :weird :process 0}", "{:type :ok :value [[:r :x 5]]}"])
def test_malformed_histories_refused(text):
    with pytest.raises(BadHistory):
        parse(text)


def test_the_command(tmp_path):
    path = tmp_path / "h.edn"
    path.write_text(to_edn(numbered(*CASES["G2-item"][0])))
    run = [sys.executable, "-m", "history_check", str(path)]
    found = subprocess.run(run + ["--consistency-model", "serializable", "--json", "--edn", str(tmp_path / "o.edn")],
                           capture_output=True, text=True, cwd=ROOT)
    assert found.returncode == 1 and json.loads(found.stdout)["anomaly_types"] == ["G2-item"]
    assert (tmp_path / "o.edn").read_text() == path.read_text()
    assert subprocess.run(run + ["-m", "snapshot-isolation"], capture_output=True, cwd=ROOT).returncode == 0
    for bad in (["-m", "nope"], ["--budget", "0"]):
        refused = subprocess.run(run + bad, capture_output=True, text=True, cwd=ROOT)
        assert refused.returncode == 2 and refused.stdout == "" and len(refused.stderr.strip().splitlines()) == 1
    path.write_text("{:type :ok :value [[:write :x 1]]}")
    refused = subprocess.run(run, capture_output=True, text=True, cwd=ROOT)
    assert refused.returncode == 2 and "neither an append nor a read" in refused.stderr


def elle_op(text: str) -> list[list]:
    """Elle's test notation (elle/list_append_test.clj's `op`): "ax1ay1" appends 1 to x and to y,
    "rx12" reads x as [1 2], "ry" reads y as nil."""
    mops: list[list] = []
    for c in text:
        if c in "ar":
            mops.append(["append" if c == "a" else "r", None, None])
        elif c.isalpha():
            mops[-1][1] = c
        elif mops[-1][0] == "append":
            mops[-1][2] = int(c)
        else:
            mops[-1][2] = (mops[-1][2] or []) + [int(c)]
    return mops


def elle_sequential(*texts: str, process=None):
    """Elle's `pair`ed ops one after another (each invoked, then completed)."""
    return history(*[("ok", 0 if process is None else process[i], elle_op(t)) for i, t in enumerate(texts)])


# Elle's own expectations (test/elle/list_append_test.clj, by test name): the anomalies its answer
# reports (those the model forbids) and its `not`.
ELLE_CASES = {
    # (Elle's answer is `{:valid? true}` alone: no anomaly read committed forbids; the boundary
    # of what was found, allowed, is given here all the same.)
    "repeatable-read-test (read committed)": (
        lambda: numbered(ok(*elle_op("rxay1")), ok(*elle_op("ryax1"))), "read-committed", [], ["repeatable-read"]),
    "repeatable-read-test": (
        lambda: numbered(ok(*elle_op("rxay1")), ok(*elle_op("ryax1"))), "repeatable-read", ["G2-item"],
        ["repeatable-read"]),
    "G-nonadjacent-test": (
        lambda: elle_sequential("ax1", "rx1ry", "ay1", "ry1rx"), "strict-serializable", ["G-nonadjacent-item"],
        ["repeatable-read", "snapshot-isolation"]),
    "G-nonadjacent-test (adjacent rw)": (
        lambda: elle_sequential("rx5ay1", "ryaz2", "rzat3", "rt3au4", "ruax5"), "snapshot-isolation", [], []),
    "lost-update-test": (
        lambda: elle_sequential("ax0", "rx0ax1", "rx0ax2"), "strict-serializable", ["G2-item", "lost-update"],
        ["cursor-stability", "update-atomic"]),
    "lost-update-test (one txn, double write)": (
        lambda: elle_sequential("rxax1ax2", "rx12"), "strict-serializable", [], []),
    "rr-g-single-item-test": (
        lambda: elle_sequential("ax1ay1", "rx1ry"), "repeatable-read", ["G-single-item"],
        ["consistent-view", "repeatable-read"]),
    "rr-g-nonadjacent-item-test": (
        lambda: elle_sequential("ax1at1", "rx1ry", "ay1az2", "rz2rt"), "repeatable-read", ["G-nonadjacent-item"],
        ["repeatable-read", "snapshot-isolation"]),
    "checker-test G1b": (
        lambda: elle_sequential("ax1ax2", "rx1"), "strict-serializable", ["G-single-item", "G1b"],
        ["read-committed"]),
    "checker-test Strong SI violation": (
        lambda: elle_sequential("ax1", "ax2", "rx1", "rx12", process=[0, 1, 2, 3]), "strict-serializable",
        ["G-single-item-realtime"], ["strong-snapshot-isolation"]),
    "checker-test Strong SI violation (serializable)": (
        lambda: elle_sequential("ax1", "ax2", "rx1", "rx12", process=[0, 1, 2, 3]), "serializable", [], []),
    "checker-test G-single": (
        lambda: numbered(ok(*elle_op("ax1ay1")), ok(*elle_op("ax2ry")), ok(*elle_op("rx12"))), "serializable",
        ["G-single-item"], ["consistent-view", "repeatable-read"]),
    "checker-test G1c": (
        lambda: numbered(ok(*elle_op("ax1ry1")), ok(*elle_op("ax2ay1")), ok(*elle_op("rx12ry1"))), "serializable",
        ["G1c"], ["read-committed"]),
    "unobserved-write-test": (
        lambda: numbered(*(ok(*elle_op(t)) for t in ("ax1ay1", "ax2ay2", "ax3ay3", "rx12", "ry2"))), "serializable",
        ["G-single-item", "G0"], ["read-uncommitted"]),
}


@pytest.mark.parametrize("name", sorted(ELLE_CASES))
def test_the_same_answer_as_elles_own_tests(name):
    ops, model, forbidden, ruled_out = ELLE_CASES[name]
    answer = check(ops(), model)
    assert answer.forbidden == forbidden and answer.not_models == ruled_out, answer.as_dict()


def test_a_process_cycle_as_elles_wr_process_test():
    """t0 -wr-> t1 -process-> t2 -wr-> t0: G1c-process, forbidden by strong session snapshot isolation."""
    events = [{"process": 1, "type": "invoke", "value": [["r", "x", None], ["append", "y", 1]]},
              {"process": 1, "type": "ok", "value": [["r", "x", [1]], ["append", "y", 1]]},
              {"process": 2, "type": "invoke", "value": [["r", "y", None]]},
              {"process": 2, "type": "ok", "value": [["r", "y", [1]]]},
              {"process": 2, "type": "invoke", "value": [["append", "x", 1]]},
              {"process": 2, "type": "ok", "value": [["append", "x", 1]]}]
    answer = check(build(events), "strong-session-snapshot-isolation")
    assert answer.forbidden == ["G1c-process"] and answer.not_models == ["strong-session-read-committed"]
    assert [s["type"] for s in answer.cases["G1c-process"][0]["steps"]] in (
        ["wr", "wr", "process"], ["wr", "process", "wr"], ["process", "wr", "wr"])
