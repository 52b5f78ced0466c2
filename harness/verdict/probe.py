"""A capacity probe's run judged apart from its warm-up (harness.capacity.plan): the sliding
window checked at each step against the latency and rate rules, and the report's `probe`
section, whose SLA results are over the measured steps only. The audits are the run's, whole."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from harness.capacity.plan import ProbePlan
from harness.config import sla
from harness.config.settings import Settings
from harness.report_shape import ProbeRun, SlaResult, Transport
from harness.verdict.report import period_figures, stage_report
from harness.watch.metrics import Metrics

__all__ = ["WARMUP_STAGE", "ProbeEnding", "probe_section", "window_breaks"]

# The probe's stages (harness.run.probe_shape): its warm-up, then one per step.
WARMUP_STAGE = 0
# What a window is checked against: the rules about how fast and how often, not the counts and
# anomalies, which are the whole run's.
_WINDOW_KINDS = ("ms", "rate")


@dataclass(frozen=True)
class ProbeEnding:
    """How the probe's run ended (harness.run.probe_shape): its plan, the seconds it measured
    after its warm-up until its load stopped, why it stopped, and the rules a window broke."""

    plan: ProbePlan
    measured_s: float
    stopped: str
    broken: list[str]


def _merged(metrics: Metrics, stages: Iterable[int]) -> Metrics:
    merged = Metrics(keep_op_ids=False)
    for index in stages:
        if index in metrics.stages:
            merged.merge(metrics.stages[index])
    return merged


def window_breaks(metrics: Metrics, last_step: int, plan: ProbePlan, settings: Settings,
                  transport: Transport) -> list[str]:
    """The latency and rate rules the window ending with step `last_step` (it and the step
    before) broke; a rule with nothing to read in the window (no call in its scope, a metric
    this transport cannot observe) breaks nothing here: the probe's whole measure judges it."""
    rules = tuple(rule for rule in settings.sla_rules if sla.METRICS[rule.metric].kind in _WINDOW_KINDS)
    window = _merged(metrics, (last_step - 1, last_step))
    figures = period_figures(window, plan.window_s, settings.isolation, transport)
    return [r["name"] for r in sla.evaluate(rules, figures, settings.scopes)
            if not r["ok"] and r["observed"] is not None and r["not_measurable"] is None]


def probe_section(metrics: Metrics, ending: ProbeEnding, settings: Settings, transport: Transport, *,
                  scoped: list[str], not_judged: list[str]) -> ProbeRun:
    """The probe's figures and SLA results after its warm-up; on kept data, the audit checks it
    judged (`scoped`: by its own calls' identities) and those it did not."""
    plan = ending.plan
    steps = [index for index in metrics.stages if index != WARMUP_STAGE]
    measured = _merged(metrics, steps)
    figures = period_figures(measured, ending.measured_s, settings.isolation, transport)
    results: list[SlaResult] = sla.evaluate(settings.sla_rules, figures, settings.scopes)
    warmup = metrics.stages.get(WARMUP_STAGE)
    return ProbeRun(
        agents=plan.agents, warmup_s=plan.warmup_s, step_s=plan.step_s, window_s=plan.window_s, min_s=plan.min_s,
        max_s=plan.max_s, min_calls=plan.min_calls, stopped=ending.stopped, broken=ending.broken,
        warmup_calls=sum(t.calls for t in warmup.tools.values()) if warmup else 0,
        measured=stage_report(1, plan.agents, measured, figures, results),
        sla=results,
        data="kept" if plan.kept else "fresh",
        scoped_checks=scoped,
        not_judged=not_judged,
    )
