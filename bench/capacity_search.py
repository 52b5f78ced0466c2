"""A whole --capacity search, its probes as a Markdown table for RESULTS.md.

    .venv/bin/python bench/capacity_search.py [--known-limit] [locust options...]

Runs `locust --headless --capacity` with the options given (servers from --pg-dsn / --redis-url,
or TOOLCLASH_PG_DSN / TOOLCLASH_REDIS_URL, or the embedded default), prints its console answer,
then the table of its probes and the answer from its JSON report. With --known-limit, the platform
of tests/test_capacity_run.py at full length: pool_exhaustion on one connection held 100 ms, a rule
on the pool's wait p50 < 460 ms, so Little's law puts the limit at 1 + 460 / hold agents (the hold
measured from the probes' calls/s); the table's last line compares it with the capacity found.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

KNOWN_LIMIT_RULE = """
[[rule]]
name = "pool wait p50 < 460 ms"
metric = "pool_wait_p50_ms"
op = "<"
threshold = 460

[[rule]]
metric = "success_rate"
op = ">"
threshold = 0.95
"""


def _table(capacity: dict) -> str:
    lines = ["| probe | agents | verdict | stopped | measured s | calls | calls/s | p95 ms | pool wait p95 ms"
             " | limiting |", "|---:|---:|---|---|---:|---:|---:|---:|---:|---|"]
    for number, p in enumerate(capacity["probes"], start=1):
        lines.append(f"| {number} | {p['agents']} | {'PASS' if p['passed'] else 'FAIL'} | {p['stopped']} |"
                     f" {p['duration_s']:.1f} | {p['calls']:,} | {p['throughput_per_s']:,.1f} |"
                     f" {p['p95_ms'] if p['p95_ms'] is not None else '-'} |"
                     f" {p['pool_wait_p95_ms'] if p['pool_wait_p95_ms'] is not None else '-'} | {p['limiting']} |")
    return "\n".join(lines)


def main() -> int:
    known_limit = "--known-limit" in sys.argv
    extra = [arg for arg in sys.argv[1:] if arg != "--known-limit"]
    with tempfile.TemporaryDirectory() as scratch:
        report_path = Path(scratch) / "capacity.json"
        own = ["--report-json", str(report_path)]
        if known_limit:
            rule = Path(scratch) / "pool.toml"
            rule.write_text(KNOWN_LIMIT_RULE, encoding="utf-8")
            own += ["--scenario", "pool_exhaustion", "--pool-size", "1", "--hold-time", "100", "--sla", str(rule)]
        done = subprocess.run([str(ROOT / ".venv/bin/locust"), "-f", str(ROOT / "locustfile.py"), "--headless",
                               "--capacity", *own, *extra], cwd=ROOT, capture_output=True, text=True)
        print(done.stdout)
        if not report_path.exists():
            print(done.stderr[-3000:], file=sys.stderr)
            return done.returncode or 2
        capacity = json.loads(report_path.read_text(encoding="utf-8"))["capacity"]
    print(_table(capacity))
    print(f"\n{capacity['answer']}")
    if known_limit:
        hold_ms = 1000 / (sum(p["throughput_per_s"] for p in capacity["probes"]) / len(capacity["probes"]))
        print(f"Little's law: a hold of {hold_ms:.1f} ms a call puts the limit at {1 + 460 / hold_ms:.2f} agents;"
              f" found {capacity['capacity']}, failing at {capacity['failing']}")
    return done.returncode


if __name__ == "__main__":
    sys.exit(main())
