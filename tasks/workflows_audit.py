"""The workflows' audit: which write overwrote which read, by op id.

Each write of a workflow (tasks/workflows.py) says in its value the version it read and how far
behind that read was when it wrote (`behind`: the versions written meanwhile), and how long after
the read it wrote (`stale_ms`); each other write of the same data says the version it wrote
(deduct_credits: read, then written + 1; update_plan: written). So a write from a stale read is
named with the writes it overwrote, the lost updates, by op id; for the queue, a job taken
after it had left the queue's head is named with its other takers. A guarded run has none. The
data's own checks still judge what the lost updates did (credits_audit: the balances against the
ledger, which holds what each write meant to take; this audit: each plan's steps against the
steps written).
"""

from __future__ import annotations

from typing import Any

from db.audits import SHOW_AT_MOST, AuditContext, Check, copy_outcomes, listing_ids
from db.rows import one_row
from tasks.agent_state import drain_plan_log
from tasks.queue import drain_queue_log

__all__ = ["audit_workflows"]

# The writes that say the version they wrote, by the data they write, as SQL on their value `v`:
# the key, the version read and the version written (`behind`: 0 for a tool that checks it).
_VERSIONED = {
    "balance": (("deduct_credits", "deduct_from_read"), "account", "ledger",
                "(v ->> 'debit')::bigint", "(v ->> 'version')::bigint",
                "(v ->> 'version')::bigint + coalesce((v ->> 'behind')::bigint, 0) + 1"),
    "plan": (("update_plan", "write_plan_step"), "team", "plan_log",
             "(v ->> 'team')::bigint", "(v ->> 'version')::bigint - coalesce((v ->> 'behind')::bigint, 0) - 1",
             "(v ->> 'version')::bigint"),
}


def audit_workflows(ctx: AuditContext) -> list[Check]:
    """Each workflow's writes from stale reads (none in a guarded run), each plan's steps, and the
    reads against the data."""
    drain_plan_log(ctx)
    drain_queue_log(ctx)
    checks = [_versioned_writes(ctx, data, *spec) for data, spec in _VERSIONED.items()]
    return [*checks, _plan_steps(ctx), _jobs_taken_at_the_head(ctx), _reads_saw_written_states(ctx)]


def _writes(table: str, key: str, read: str, wrote: str) -> str:
    """SQL: the applied writes (succeeded, or indeterminate and found in `table`) as
    (op_id, key, read, wrote, behind, stale_ms), inside a transaction that copied their outcomes."""
    return f"""SELECT op_id, {key} AS key, {read} AS read, {wrote} AS wrote, (v ->> 'behind')::bigint AS behind,
                      (v ->> 'stale_ms')::bigint AS stale_ms
               FROM (SELECT op_id, value::jsonb AS v FROM harness_outcomes h
                     WHERE value <> 'null' AND (outcome = 'succeeded' OR (outcome = 'indeterminate'
                           AND EXISTS (SELECT 1 FROM {table} t WHERE t.op_id = h.op_id)))) applied
               WHERE v ? 'version'"""


def _versioned_writes(ctx: AuditContext, data: str, tools: tuple[str, ...], kind: str, table: str, key: str,
                      read: str, wrote: str) -> Check:
    with ctx.in_schema() as conn:
        copy_outcomes(conn, ctx.acknowledged_of(tools))
        stale = conn.execute(
            f"""WITH w AS ({_writes(table, key, read, wrote)})
                SELECT s.op_id, s.key, s.read, s.wrote - 1, s.stale_ms,
                       (SELECT array_agg(o.op_id ORDER BY o.wrote) FROM w o
                        WHERE o.key = s.key AND o.wrote > s.read AND o.wrote < s.wrote)
                FROM w s WHERE s.behind > 0 ORDER BY s.behind DESC, s.key, s.op_id""").fetchall()
        writes = one_row(conn.execute("SELECT count(*) FROM harness_outcomes WHERE outcome = 'succeeded'"
                                      " AND value::jsonb ? 'behind'"))[0]
    return Check(
        f"{data}_writes_read_current", not stale, 0, len(stale),
        _stale_detail(kind, stale) if stale else
        f"each of the {writes} {data} writes of a workflow wrote over the version it read",
        anomaly="stale_writes", anomaly_count=len(stale))


def _stale_detail(kind: str, stale: list[tuple[Any, ...]]) -> str:
    """Each stale write with the writes it overwrote (those that say the version they wrote), the
    stalest first."""
    shown = []
    for op_id, key, read, overwrote, stale_ms, lost in stale[:SHOW_AT_MOST]:
        lost = lost or []
        unnamed = overwrote - read - len(lost)
        named = ", ".join(filter(None, (listing_ids(lost), f"{unnamed} write(s) that record no version" if unnamed
                                        else "")))
        shown.append(f"write {op_id} read {kind} {key} at version {read}"
                     f" {'at a time not known' if stale_ms is None else f'{stale_ms} ms before'}"
                     f" and overwrote version {overwrote}, losing {overwrote - read} update(s): {named}")
    return f"{len(stale)} writes from stale reads: " + "; ".join(shown) + (" …" if len(stale) > SHOW_AT_MOST else "")


def _plan_steps(ctx: AuditContext) -> Check:
    """Each plan's step (the steps its workflow writes counted from their reads) against the
    write_plan_step calls applied to it: a step written from a stale read loses the steps
    written since."""
    with ctx.in_schema() as conn:
        copy_outcomes(conn, ctx.acknowledged_of(["write_plan_step"]))
        # An indeterminate call applied is in plan_log, whose row names its team (its value may
        # never have come).
        written = dict(conn.execute(
            """SELECT coalesce((h.value::jsonb ->> 'team')::int, l.team), count(*) FROM harness_outcomes h
               LEFT JOIN LATERAL (SELECT team FROM plan_log l WHERE l.op_id = h.op_id AND l.team IS NOT NULL
                                  LIMIT 1) l ON true
               WHERE h.outcome = 'succeeded' OR (h.outcome = 'indeterminate' AND l.team IS NOT NULL)
               GROUP BY 1""").fetchall())
    # Every seeded team's plan: one holding steps no write made is wrong too.
    steps = {team: int(ctx.redis.hget(ctx.keys("plan", team), "step") or 0)
             for team in range(1, ctx.baseline.teams + 1)}
    wrong = sorted((team, held, written.get(team, 0)) for team, held in steps.items() if held != written.get(team, 0))
    return Check("plan_steps_match_writes", not wrong, 0, len(wrong),
                 "; ".join(f"team {t}'s plan holds {s} steps after {c} step writes" for t, s, c in wrong[:SHOW_AT_MOST])
                 or f"each plan holds one step per step written to it ({sum(written.values())} in all)")


def _in_log_order(consumers: list[Any]) -> str:
    shown = ", ".join(map(str, consumers[:SHOW_AT_MOST]))
    return shown + (f" … ({len(consumers)} in all)" if len(consumers) > SHOW_AT_MOST else "")


def _jobs_taken_at_the_head(ctx: AuditContext) -> Check:
    """Each job taken by a workflow was the queue's next when taken; one that was not is named with
    the other consumers the log shows taking it (a job taken twice)."""
    with ctx.in_schema() as conn:
        copy_outcomes(conn, ctx.acknowledged_of(["take_job"]))
        stale = conn.execute(
            """SELECT h.op_id, value::jsonb ->> 'job', (value::jsonb ->> 'stale_ms')::bigint,
                      (SELECT array_agg(q.consumer ORDER BY q.stream_ms, q.stream_seq) FROM queue_log q
                       WHERE q.event = 'dequeue' AND q.job = (h.value::jsonb ->> 'job')::uuid AND q.consumer <> h.op_id)
               FROM harness_outcomes h
               WHERE outcome = 'succeeded' AND (value::jsonb ->> 'stale')::boolean ORDER BY 2""").fetchall()
        taken = one_row(conn.execute("SELECT count(*) FROM harness_outcomes WHERE outcome = 'succeeded'"))[0]
    return Check(
        "jobs_taken_at_the_head", not stale, 0, len(stale),
        "; ".join(f"take {op_id} took job {job} {'read at a time not known' if ms is None else f'read {ms} ms before'},"
                  f" no longer the queue's next" + (f": also taken by {_in_log_order(others)}" if others else "")
                  for op_id, job, ms, others in stale[:SHOW_AT_MOST]) + (" …" if len(stale) > SHOW_AT_MOST else "")
        if stale else f"each of the {taken} jobs taken by a workflow was the queue's next when taken",
        anomaly="stale_writes", anomaly_count=len(stale))


def _reads_saw_written_states(ctx: AuditContext) -> Check:
    """Each read a workflow made saw a state the data had: an account's or a plan's version it has
    reached, a job a producer queued (by its op id, in the queue's log). A read of a version not
    written yet, or of a job never queued, was invented by whatever answered it."""
    with ctx.in_schema() as conn:
        copy_outcomes(conn, ctx.acknowledged_of(["read_balance", "read_plan", "read_queue"]))
        reads = """SELECT op_id, value::jsonb AS v FROM harness_outcomes WHERE outcome = 'succeeded'"""
        wrong = conn.execute(
            f"""SELECT r.op_id, 'account ' || (v ->> 'account') || ' at version ' || (v ->> 'version')
                FROM ({reads}) r LEFT JOIN accounts a ON a.id = (v ->> 'account')::int
                WHERE v ? 'account' AND (a.id IS NULL OR (v ->> 'version')::bigint > a.version)
                UNION ALL
                SELECT r.op_id, 'job ' || (v ->> 'job') FROM ({reads}) r
                WHERE v ->> 'job' IS NOT NULL AND NOT EXISTS (
                    SELECT 1 FROM queue_log q WHERE q.event = 'enqueue' AND q.job = (v ->> 'job')::uuid)""").fetchall()
        plans = conn.execute(f"SELECT op_id, (v ->> 'team')::int, (v ->> 'version')::bigint FROM ({reads}) r"
                             " WHERE v ? 'team'").fetchall()
        count = one_row(conn.execute(f"SELECT count(*) FROM ({reads}) r"))[0]
    versions = {team: int(ctx.redis.hget(ctx.keys("plan", team), "version") or 0) for team in {t for _, t, _ in plans}}
    wrong += [(op_id, f"team {team}'s plan at version {version}") for op_id, team, version in plans
              if version > versions[team]]
    return Check("reads_saw_written_states", not wrong, 0, len(wrong),
                 "; ".join(f"read {op_id} saw {what}, never written" for op_id, what in wrong[:SHOW_AT_MOST])
                 + (" …" if len(wrong) > SHOW_AT_MOST else "")
                 or f"each of the {count} reads saw a version its data reached, or a job a producer queued")
