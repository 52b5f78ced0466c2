"""The tool server's contract, without a server: each built-in tool's declared arguments against what
its arguments step draws, the op id read from _meta, header and argument, and a call's outcome as
its MCP result (isError, structuredContent)."""

from __future__ import annotations

import json
import uuid

import jsonschema
import psycopg
import pytest
from pydantic import ValidationError

from db.errors import Failure, Refused
from db.redis_keys import RedisKeys
from tasks.scenarios import ScenarioParams, built_in_tools
from tests.support import PREPARED
from toolserver.identity import (
    AGENT_ID_META_KEY,
    ANONYMOUS_AGENT,
    LANE_META_KEY,
    OP_ID_META_KEY,
    Identity,
    IdentityRefused,
    identity_of,
)
from toolserver.results import call_result
from toolserver.schemas import DESCRIPTIONS, OUTPUT_SCHEMA, arguments_model
from transport.call_record import CallRecord, Outcome
from transport.mcp.tool_result import read_tool_result

TOOLS = built_in_tools(ScenarioParams(accounts=PREPARED.accounts, keys=RedisKeys("any")))


def test_every_built_in_tool_and_no_other_is_declared():
    assert sorted(DESCRIPTIONS) == sorted(TOOLS)


@pytest.mark.parametrize("name", sorted(TOOLS))
def test_what_a_tool_draws_is_what_its_schema_declares(name):
    model = arguments_model(name)
    schema = model.model_json_schema(by_alias=True)
    validator = jsonschema.Draft202012Validator(schema)
    validator.check_schema(schema)
    drawn = [TOOLS[name].draw_arguments(seed) for seed in range(200)]
    for arguments in drawn:
        validator.validate(arguments)
        assert model.model_validate(arguments).model_dump_one_level() == {**arguments, "op_id": None}
    assert set(schema["properties"]) == {*drawn[0], "op_id"}
    assert set(schema.get("required", ())) == set(drawn[0]), "every drawn argument is required, op_id is not"
    assert schema["additionalProperties"] is False


def test_a_schema_refuses_what_no_draw_gives():
    with pytest.raises(ValidationError):
        arguments_model("deduct_credits").model_validate({"account": 1, "amount": 0})
    with pytest.raises(ValidationError):
        arguments_model("enqueue_job").model_validate({"level": 4})
    with pytest.raises(ValidationError, match="Extra inputs"):
        arguments_model("update_plan").model_validate({"team": 1, "teem": 2})
    with pytest.raises(ValidationError):
        arguments_model("reserve_slot").model_validate({"op_id": "not a uuid"})


def test_the_op_id_comes_from_meta_header_or_argument_and_they_must_agree():
    op_id = uuid.uuid4()
    assert identity_of({OP_ID_META_KEY: str(op_id)}, None, None) == Identity(op_id, "meta", ANONYMOUS_AGENT,
                                                                              ANONYMOUS_AGENT)
    assert identity_of(None, {"idempotency-key": str(op_id)}, None).op_id_from == "header"
    assert identity_of(None, None, op_id).op_id_from == "argument"
    agreeing = identity_of({OP_ID_META_KEY: str(op_id)}, {"idempotency-key": str(op_id)}, op_id)
    assert (agreeing.op_id, agreeing.op_id_from) == (op_id, "meta")
    made = identity_of({}, {}, None)
    assert made.op_id_from == "server" and made.op_id.version == 4
    with pytest.raises(IdentityRefused, match="different op ids"):
        identity_of({OP_ID_META_KEY: str(op_id)}, None, uuid.uuid4())
    with pytest.raises(IdentityRefused, match="not a UUID"):
        identity_of(None, {"idempotency-key": "twice"}, None)
    with pytest.raises(IdentityRefused, match="not a UUID"):
        identity_of({OP_ID_META_KEY: 7}, None, None)


def test_the_agent_is_metas_else_the_sessions_else_anonymous():
    assert identity_of({AGENT_ID_META_KEY: "p0-a3"}, {"mcp-session-id": "s1"}, None).agent_id == "p0-a3"
    assert identity_of({}, {"mcp-session-id": "s1"}, None).agent_id == "s1"
    assert identity_of({}, {}, None).agent_id == ANONYMOUS_AGENT
    with pytest.raises(IdentityRefused, match="non-empty string"):
        identity_of({AGENT_ID_META_KEY: ""}, None, None)


def _record(outcome: Outcome, failures: list[Failure], exception: BaseException | None = None, value=None):
    return CallRecord(tool="deduct_credits", backend="pg", op_id=uuid.uuid4(), outcome=outcome,
                      attempts=len(failures) + (outcome is Outcome.SUCCEEDED), failures=failures, exception=exception,
                      value=value)


def test_a_success_after_retries_says_its_value_attempts_and_the_kinds_it_met():
    record = _record(Outcome.SUCCEEDED, [Failure.DEADLOCK, Failure.DEADLOCK], value={"debit": 1, "amount": 2})
    result = call_result(record, Identity(record.op_id, "header", "a", "a"))
    assert result.is_error is False
    assert result.structured_content == {"value": {"debit": 1, "amount": 2}, "op_id": str(record.op_id),
                                         "op_id_from": "header", "attempts": 3, "failures": ["deadlocks"] * 2}
    jsonschema.validate(result.structured_content, OUTPUT_SCHEMA)
    assert json.loads(result.content[0].text) == result.structured_content


def test_a_failure_says_its_kind_sqlstate_whether_it_was_rolled_back_or_refused():
    gave_up = _record(Outcome.FAILED, [Failure.SERIALIZATION_FAILURE] * 2,
                      psycopg.errors.SerializationFailure("could not serialize access"))
    failed = call_result(gave_up, Identity(gave_up.op_id, "meta", "a", "a"))
    assert failed.is_error is True
    assert failed.structured_content == {
        "kind": "serialization_failures", "sqlstate": "40001", "rolled_back": True, "refused": False,
        "op_id": str(gave_up.op_id), "op_id_from": "meta", "attempts": 2,
        "failures": ["serialization_failures"] * 2}
    assert [block.text for block in failed.content] == [
        "deduct_credits failed (serialization_failures, attempt 2): could not serialize access"]
    refused = call_result(_record(Outcome.FAILED, [Failure.REFUSED], Refused("account 3 holds 0, needs 5")),
                          Identity(uuid.uuid4(), "server", "a", "a"))
    assert (refused.structured_content["refused"], refused.structured_content["sqlstate"]) == (True, None)
    assert refused.content[0].text == "deduct_credits refused (refusals, attempt 1): account 3 holds 0, needs 5"
    unknown = call_result(_record(Outcome.INDETERMINATE, [Failure.CONNECTION_LOST],
                                  psycopg.OperationalError("consuming input failed")),
                          Identity(uuid.uuid4(), "server", "a", "a"))
    assert (unknown.structured_content["kind"], unknown.structured_content["rolled_back"]) == (
        "connection_errors", False)
    assert "outcome unknown" in unknown.content[0].text
    # A failed call whose tool said what its last attempt set out to do carries it, and a client reads it.
    tried = {"attempt": 2, "txn": [["append", "1.0", "0123456789ab.2"]], "tried": [[1, [["r", "1.0", None]]]]}
    said = call_result(_record(Outcome.FAILED, [Failure.LOCK_TIMEOUT] * 2, value=tried),
                       Identity(uuid.uuid4(), "meta", "a", "a"))
    assert said.structured_content["attempted"] == tried and "attempted" not in failed.structured_content
    assert read_tool_result(said.model_dump(by_alias=True)).attempted == tried


def test_a_call_names_its_lane_beside_its_agent_or_its_lane_is_the_agents():
    op_id = str(uuid.uuid4())
    named = identity_of({OP_ID_META_KEY: op_id, AGENT_ID_META_KEY: "a", LANE_META_KEY: "a/1"}, {}, None)
    assert (named.agent_id, named.lane) == ("a", "a/1")
    assert identity_of({OP_ID_META_KEY: op_id, AGENT_ID_META_KEY: "a"}, {}, None).lane == "a"
    with pytest.raises(IdentityRefused, match="'io.toolclash/lane' must be a non-empty string"):
        identity_of({OP_ID_META_KEY: op_id, LANE_META_KEY: ""}, {}, None)
