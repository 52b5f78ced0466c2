"""Each scenario alone at its default settings: does it produce its conflicts?

    .venv/bin/python bench/conflicts_at_defaults.py [--users 50] [--run-time 30s] [locust options...]

Runs `locust` once per scenario (servers from TOOLCLASH_PG_DSN / TOOLCLASH_REDIS_URL, or the
embedded default) and prints, per scenario, the counters that show its conflicts, and the verdict.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tasks.scenarios import SCENARIOS  # noqa: E402

SHOWN = {
    "optimistic_locking": lambda r: f"version_conflicts={r['conflicts']['version_conflicts']}",
    "deadlock": lambda r: f"deadlocks={r['conflicts']['deadlocks']} (server: {r['server_counters']['deadlocks']})",
    "isolation": lambda r: f"lost_updates={r['anomalies']['lost_updates']} write_skew={r['anomalies']['write_skew']}"
                           f" serialization_failures={r['conflicts']['serialization_failures']}",
    "pool_exhaustion": lambda r: f"pool_wait_p95={r['latency_ms']['pool_wait']['p95']}ms"
                                 f" peak_waiting={r['pool']['peak_waiting']}"
                                 f" pool_timeouts={r['conflicts']['pool_timeouts']}",
    "queue": lambda r: f"queue_rejections={r['conflicts']['queue_rejections']}"
                       f" queue_wait_p95={r['latency_ms']['queue_wait']['p95']}ms",
    "cross_service": lambda r: f"windows={r['latency_ms']['cross_service_window']['count']}"
                               f" window_p95={r['latency_ms']['cross_service_window']['p95']}ms"
                               f" version_conflicts={r['conflicts']['version_conflicts']}",
    "agent_state": lambda r: f"redis_watch_conflicts={r['conflicts']['redis_watch_conflicts']}",
}


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--users", default="50")
    parser.add_argument("--run-time", default="30s")
    args, extra = parser.parse_known_args()
    for name in SCENARIOS:
        with tempfile.TemporaryDirectory() as scratch:
            report_path = Path(scratch) / "report.json"
            subprocess.run(
                [str(ROOT / ".venv/bin/locust"), "--headless", "--only-summary", "--users", args.users,
                 "--spawn-rate", args.users, "--run-time", args.run_time, "--scenario", name,
                 "--report-json", str(report_path), *extra],
                cwd=ROOT, capture_output=True, text=True,
            )
            if not report_path.exists():
                print(f"{name:<20} no report")
                continue
            report = json.loads(report_path.read_text())
        calls = sum(t["calls"] for t in report["tools"].values())
        print(f"{name:<20} {calls:>7} calls  {SHOWN[name](report)}  verdict={report['verdict']}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
