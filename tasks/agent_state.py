"""The agent_state scenario: agents of a team share a plan in Redis and change it with
optimistic concurrency (WATCH/MULTI/EXEC, retried on WatchError).

Every change is appended to the plans' log (a Redis stream) in the same MULTI; the coordinator
drains the log into PostgreSQL (plan_log) during the run, so Redis keeps the plans, one
idempotence key per agent and the log's last few entries, however long the run.
"""

from __future__ import annotations

import random
import uuid

import psycopg
import redis

from db.audits import SHOW_AT_MOST, AuditContext, Check, identities_in_table
from db.redis_drain import drain_stream
from db.redis_keys import RedisKeys
from db.tool import Transaction

__all__ = ["PLAN_TOOLS", "update_plan", "update_plan_arguments", "drain_plan_log", "audit_agent_state"]

# The tools that change a plan, each change logged under its call's op id with the version it wrote
# (tasks/workflows.py's write_plan_step too).
PLAN_TOOLS = ("update_plan", "write_plan_step")


def update_plan_arguments(rng: random.Random, *, teams: int) -> dict[str, int]:
    """The team, of the `teams`, whose plan the call changes."""
    return {"team": rng.randint(1, teams)}


def update_plan(tx: Transaction, *, team: int, keys: RedisKeys) -> dict[str, int]:
    """Add the call's step to its team's plan and bump the plan's version, once per call; the
    value is {"team", "version": the version this call wrote}.

    redis-py also raises WatchError when the connection drops while watching, EXEC included:
    the attempt may have been applied. So the agent's own key (`applied_by`, written in the same
    MULTI: the last step the agent applied, and the version it wrote) settles it from the
    server: read again after a failed EXEC, it holds this call's step when EXEC was applied (the
    call then succeeded, on any attempt, the last one included), another step when it was not
    (a conflict: retried); when that read fails too, its ConnectionError makes the call
    indeterminate (transport.in_process: a Redis tool's lost connection). An agent makes one call at a
    time and retries only within it, so one key per agent guards every retry that can still
    come; each attempt also looks at it first, under the WATCH: an earlier attempt's EXEC that
    reached the server only after the settling read changes the plan and aborts this attempt,
    whose retry then finds the step.
    """
    plan, applied_by = keys("plan", team), keys("plan", "applied_by", tx.lane)
    step = str(tx.op_id)
    with tx.redis.pipeline() as pipe:
        pipe.watch(plan)
        earlier = _version_applied(pipe.get(applied_by), step)
        if earlier is not None:
            return {"team": team, "version": earlier}
        version = int(pipe.hget(plan, "version") or 0) + 1
        tx.work()  # the agent decides its change while others may change the plan
        pipe.multi()
        pipe.hset(plan, mapping={"version": version, "last_step": step})
        pipe.set(applied_by, f"{step} {version}")
        pipe.xadd(keys("plan", "log"), {"step": step, "team": team})
        try:
            pipe.execute()
        except (redis.WatchError, redis.ConnectionError, redis.TimeoutError):
            if _version_applied(tx.redis.get(applied_by), step) is None:
                raise  # not applied: a conflict is retried, a lost connection is indeterminate
    return {"team": team, "version": version}


def _version_applied(held: bytes | None, step: str) -> int | None:
    """The version `step` wrote, if `held` (an agent's applied_by) says it was applied."""
    applied, _, version = (held or b"").decode().partition(" ")
    return int(version) if applied == step else None


def _plan_log_row(fields: dict[bytes, bytes]) -> tuple[uuid.UUID | None, int | None]:
    """(step, team); (None, None) for an entry update_plan did not write."""
    try:
        return uuid.UUID(fields[b"step"].decode()), int(fields[b"team"])
    except (KeyError, ValueError, UnicodeDecodeError):
        return None, None


def drain_plan_log(ctx: AuditContext) -> int:
    """Move the plans' log from Redis into plan_log; how many changes were moved."""
    return drain_stream(ctx.conn, ctx.schema, ctx.redis, ctx.keys("plan", "log"), "plan_log", ("op_id", "team"),
                        _plan_log_row)


def audit_agent_state(ctx: AuditContext, *, teams: int) -> list[Check]:
    """Every change by identity in plan_log (drained to the end first), each version a call was
    told it wrote against that call's place in plan_log, and each plan's version against the
    number of its changes there."""
    drain_plan_log(ctx)
    conn = ctx.conn
    versions = {team: int(ctx.redis.hget(ctx.keys("plan", team), "version") or 0) for team in range(1, teams + 1)}
    with ctx.in_schema():
        changes = dict(conn.execute("SELECT team, count(*) FROM plan_log WHERE team IS NOT NULL GROUP BY team"))
        present, within, failed = identities_in_table(
            conn, "plan_log", ctx.acknowledged_of(PLAN_TOOLS), present="plan_steps_not_lost",
            within="plan_steps_within_acknowledged", failed="failed_not_in_plans", lost_anomaly="lost_updates")
        in_order = _versions_in_log_order(conn)
    wrong_versions = sorted((team, versions.get(team, 0), changes.get(team, 0)) for team in set(versions) | set(changes)
                            if versions.get(team, 0) != changes.get(team, 0))
    return [
        present,
        Check("plan_version_counts_changes", not wrong_versions, 0, len(wrong_versions),
              "; ".join(f"team {t} at version {v} after {a} changes" for t, v, a in wrong_versions[:5])
              or "each team's version = the number of changes applied to its plan"),
        in_order,
        within,
        failed,
    ]


def _versions_in_log_order(conn: psycopg.Connection) -> Check:
    """Each call told it wrote version k of team t's plan (succeeded, or indeterminate and found
    in plan_log) is the k-th change of team t in plan_log, in the stream's order. A change the
    server lost whose version the next writer was given again fails it, and so does a version
    set back, reused by every change after it. Inside identities_in_table's transaction (its
    copy of the outcomes)."""
    wrong, shown, compared = conn.execute(
        """WITH log AS (SELECT op_id, team,
                               row_number() OVER (PARTITION BY team ORDER BY stream_ms, stream_seq) AS version
                        FROM plan_log WHERE team IS NOT NULL AND op_id IS NOT NULL),
                told AS (SELECT op_id, outcome, (value::jsonb ->> 'team')::int AS team,
                                (value::jsonb ->> 'version')::int AS version
                         FROM harness_outcomes WHERE outcome <> 'failed' AND value::jsonb ? 'version'),
                wrong AS (SELECT t.op_id, t.team, t.version, l.team AS log_team, l.version AS log_version
                          FROM told t LEFT JOIN log l USING (op_id)
                          WHERE (l.op_id IS NOT NULL OR t.outcome = 'succeeded')
                            AND (l.team, l.version) IS DISTINCT FROM (t.team, t.version))
           SELECT (SELECT count(*) FROM wrong),
                  (SELECT json_agg(w) FROM (SELECT * FROM wrong ORDER BY team, version LIMIT %s) w),
                  (SELECT count(*) FROM told)""",
        (SHOW_AT_MOST,),
    ).fetchone()
    if not wrong:
        return Check("plan_versions_in_log_order", True, 0, 0,
                     f"each of the {compared} calls told a version is that change of its plan in plan_log")
    places = "; ".join(
        f"call {w['op_id']} wrote team {w['team']}'s version {w['version']}, "
        + ("not in plan_log" if w["log_team"] is None else f"is team {w['log_team']}'s change {w['log_version']} there")
        for w in shown)
    return Check("plan_versions_in_log_order", False, 0, wrong,
                 f"{wrong} calls were told a version that is not their place in plan_log: {places}"
                 + (" …" if wrong > len(shown) else ""))
