"""How fast the history checker checks a list-append history: transactions checked per second.

    .venv/bin/python bench/elle_checker.py [--transactions 100000] [--concurrency 20] [--model serializable]

Generates a history as the list_append scenario makes them (1 to 4 micro-operations over 5 key
slots, each key rotated after 32 appends), executed by a simulated database with `--concurrency`
transactions open at once, in one of two ways:

- serial: each transaction sees every one committed before it began and no other (what a
  serializable database whose transactions do not overlap in conflict gives): no cycle;
- snapshot: each reads the snapshot it began with and commits its appends with no conflict check
  (snapshot reads without first-committer-wins): lost updates, write skew, a cycle in most
  components, the checker's worst case.

and times the checker (`history_check.check`, the dependency graph, the components, the cycle
search, the direct anomalies) over it, against `--model`, three times: the best is printed.
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from history_check import build, check  # noqa: E402
from tasks.list_append import APPENDS_PER_KEY, KEY_SLOTS  # noqa: E402


def generate(transactions: int, concurrency: int, snapshot: bool, seed: int = 1) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    lists: dict[str, list[str]] = {}
    appends: Counter[int] = Counter()
    events: list[dict[str, Any]] = []
    open_txns: list[tuple[int, list[list[Any]], dict[str, tuple[str, ...]]]] = []
    started = 0

    def begin(process: int) -> None:
        nonlocal started
        mops: list[list[Any]] = []
        for _ in range(rng.randint(1, 4)):
            slot = rng.randrange(KEY_SLOTS)
            f = rng.choice(("append", "r"))
            key = f"{slot}.{appends[slot] // APPENDS_PER_KEY}"
            if f == "append":
                appends[slot] += 1
            mops.append([f, key, f"{started}.{len(mops)}" if f == "append" else None])
        started += 1
        seen = {key: tuple(lists.get(key, ())) for _, key, _ in mops} if snapshot else {}
        events.append({"type": "invoke", "process": process, "value": [list(m) for m in mops]})
        open_txns.append((process, mops, seen))

    def commit(i: int) -> None:
        process, mops, seen = open_txns.pop(i)
        own: dict[str, list[str]] = {}
        done = []
        for f, key, value in mops:
            if f == "append":
                own.setdefault(key, []).append(value)
                done.append([f, key, value])
            else:
                base = list(seen[key]) if snapshot else list(lists.get(key, ()))
                done.append([f, key, base + own.get(key, [])])
        for key, elements in own.items():
            lists.setdefault(key, []).extend(elements)
        events.append({"type": "ok", "process": process, "value": done})

    for process in range(concurrency):
        begin(process)
    while started < transactions:
        i = rng.randrange(len(open_txns))
        process = open_txns[i][0]
        commit(i)
        begin(process)
    while open_txns:
        commit(0)
    return events


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--transactions", type=int, default=100_000)
    parser.add_argument("--concurrency", type=int, default=20)
    parser.add_argument("--model", default="serializable")
    args = parser.parse_args()
    for kind in ("serial", "snapshot"):
        events = generate(args.transactions, args.concurrency, snapshot=kind == "snapshot")
        best = float("inf")
        for _ in range(3):
            began = time.perf_counter()
            answer = check(build(events), args.model)
            best = min(best, time.perf_counter() - began)
        counts = ", ".join(f"{k} {v}" for k, v in sorted(answer.counts.items())) or "none"
        print(f"{kind:<9} {args.transactions:>8} transactions, {args.concurrency} open at once, {args.model}:"
              f" {best:6.2f} s, {args.transactions / best:>9,.0f} transactions/s checked;"
              f" {answer.components} components, valid {answer.valid}; anomalies: {counts}", flush=True)


if __name__ == "__main__":
    main()
