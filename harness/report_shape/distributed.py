"""A distributed run's workers: what each shipped, and those lost."""

from typing_extensions import TypedDict

from harness.report_shape.calls import Conflicts

__all__ = ["LostWorker", "WorkerTotals", "Workers"]


class WorkerTotals(Conflicts):
    calls: int
    succeeded: int
    failed: int
    cut_off: int
    retries: int


class LostWorker(TypedDict):
    worker: str
    state: str
    last_shipment_at: str | None


class Workers(TypedDict):
    shipped: dict[str, WorkerTotals]
    lost: list[LostWorker]
    settings: dict[str, str]  # each worker's settings fingerprint
    shipments_lost: dict[str, int]
