"""Exact metrics across Locust's workers.

Each worker ships what it recorded since its last shipment: with every Locust stats report
(`report_to_master`) and, when its load has stopped, once more in a final message. The master
adds the shipments up (counts, and histograms with the same buckets everywhere), so every figure
of the report is that of all the calls together. Before auditing, the master waits for each
worker's final message, or for the worker to be gone; a worker that vanished is reported with the
time of its last shipment, and what it had shipped is kept. Each shipment also carries the
worker's hub-lag probe since the last one (harness.watch.hub_lag), kept per worker.

A worker numbers its shipments of a test from 1 (ShipmentNumbers): a number the master never
received before a later one arrived is a shipment lost on the way, with the outcomes of the
calls it carried (its succeeded calls would be missing from what the audits compare with the
servers). The master counts them per worker (`shipments_lost`), and the verdict will not pass.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import gevent
from locust.runners import STATE_MISSING, MasterRunner

from harness.watch.hub_lag import HubLag
from harness.watch.metrics import Metrics

__all__ = ["REPORT_KEY", "Message", "ShipmentNumbers", "WorkerShipments"]

log = logging.getLogger(__name__)

class Message:
    """The names of the messages master and workers exchange (Locust's custom messages)."""

    # master -> workers, at each test start before any agent is spawned: the options a worker
    # must share with the master (harness.distributed.worker_check); each worker answers CHECKED.
    CHECK = "toolclash_check"
    CHECKED = "toolclash_checked"  # worker -> master: {"test", "refusal": None or one line}
    # master -> workers: where the servers are, the run id and seed, at each test start; or that
    # the test was refused ("refused": True) and no load may start.
    SERVERS = "toolclash_servers"
    # master -> workers: stop your agents now. Locust's master, when it quits at the end of
    # --run-time, fires test_stop before it tells the workers to quit: the audit must not run
    # while agents still write.
    STOP = "toolclash_stop"
    FINAL = "toolclash_final"  # worker -> master: the last shipment, once its load has stopped
    STAGE = "toolclash_stage"  # master -> workers: the load shape entered stage `index`
    LOAD_FAILED = "toolclash_load_failed"  # worker -> master: its load could not start; end the run


REPORT_KEY = "toolclash"  # the shipment's key in Locust's worker stats report

# A shipment: {"test": the test it belongs to, as numbered by the master, "number": its number among the
#              worker's shipments of that test, from 1, "metrics": Metrics.to_dict(),
#              "settings": the fingerprint of the settings the worker ran the test with (harness.config.run_settings),
#              "hub_lag": HubLag.to_dict(), the worker's event loop since its last shipment}

_FINALS_GRACE_S = 30.0


class ShipmentNumbers:
    """A worker's numbering of its shipments, from 1 in each test."""

    def __init__(self) -> None:
        self._test: int | None = None
        self._last = 0

    def next(self, test: int) -> int:
        if test != self._test:
            self._test, self._last = test, 0
        self._last += 1
        return self._last


class WorkerShipments:
    """The master's sum of what its workers shipped during one test."""

    def __init__(self) -> None:
        self.total = Metrics()
        # Each worker's own totals (counts only: the operation ids, 16 bytes a call, are kept
        # once, in `total`, for the audits).
        self._by_worker: dict[str, dict[str, int]] = {}
        self._hub_lags: dict[str, HubLag] = {}
        self._last_shipment: dict[str, float] = {}
        self._last_number: dict[str, int] = {}  # the highest shipment number received, per worker
        self._numbers_missing: dict[str, int] = {}
        self._finals: set[str] = set()
        self._expected: set[str] = set()
        self._settings: dict[str, str] = {}
        self._test = 0

    def begin(self, runner: MasterRunner, test: int) -> None:
        self._test = test
        self.total = Metrics()
        self._by_worker.clear()
        self._hub_lags.clear()
        self._last_shipment.clear()
        self._last_number.clear()
        self._numbers_missing.clear()
        self._finals.clear()
        self._settings.clear()
        self._expected = set(runner.clients.keys())

    def add(self, worker_id: str, shipment: dict[str, Any], *, final: bool = False) -> None:
        if shipment["test"] != self._test:
            log.info("worker %s shipped metrics of test %s during test %s: left out",
                     worker_id, shipment["test"], self._test)
            return
        last, number = self._last_number.get(worker_id, 0), shipment["number"]
        self._numbers_missing[worker_id] = self._numbers_missing.get(worker_id, 0) + max(0, number - last - 1)
        self._last_number[worker_id] = max(last, number)
        received = Metrics.from_dict(shipment["metrics"])
        self.total.merge(received)
        totals = self._by_worker.setdefault(worker_id, {})
        for name, count in _totals(received).items():
            totals[name] = totals.get(name, 0) + count
        self._hub_lags.setdefault(worker_id, HubLag()).merge(HubLag.from_dict(shipment["hub_lag"]))
        self._last_shipment[worker_id] = time.time()
        self._expected.add(worker_id)
        if shipment.get("settings") is not None:
            self._settings[worker_id] = shipment["settings"]
        if final:
            self._finals.add(worker_id)

    def wait_for_finals(self, runner: MasterRunner, timeout_s: float) -> list[dict[str, Any]]:
        """Wait until every worker of the test sent its final shipment or is gone; the ones
        whose final shipment never came."""
        deadline = time.monotonic() + timeout_s + _FINALS_GRACE_S
        while time.monotonic() < deadline and any(self._still_coming(runner, w) for w in self._expected):
            gevent.sleep(0.1)
        lost = []
        for worker in sorted(self._expected - self._finals):
            last = self._last_shipment.get(worker)
            client = runner.clients.get(worker)
            lost.append({
                "worker": worker,
                "state": client.state if client is not None else "gone",
                "last_shipment_at": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(last)) if last else None,
            })
            log.warning("worker %s sent no final metrics (%s); its last shipment is kept", worker, lost[-1]["state"])
        return lost

    def _still_coming(self, runner: MasterRunner, worker: str) -> bool:
        if worker in self._finals:
            return False
        client = runner.clients.get(worker)
        return client is not None and client.state != STATE_MISSING

    def settings(self) -> dict[str, str]:
        """The fingerprint of the settings each worker ran the test with."""
        return dict(sorted(self._settings.items()))

    def hub_lags(self) -> dict[str, HubLag]:
        """Each worker's event-loop lag during the test, as its probe measured it."""
        return dict(self._hub_lags)

    def shipments_lost(self) -> dict[str, int]:
        """How many of each worker's shipments never arrived, though a later one did."""
        return dict(sorted(self._numbers_missing.items()))

    def per_worker(self) -> dict[str, dict[str, int]]:
        """Each worker's own totals: what the report's figures are the sums of."""
        return {worker: dict(totals) for worker, totals in sorted(self._by_worker.items())}


def _totals(metrics: Metrics) -> dict[str, int]:
    tools = metrics.tools.values()
    return {
        "calls": sum(t.calls for t in tools),
        "succeeded": sum(t.succeeded for t in tools),
        "failed": sum(t.failed for t in tools),
        "cut_off": sum(t.cut_off for t in tools),
        "retries": sum(t.retries for t in tools),
        **metrics.conflicts,
    }
