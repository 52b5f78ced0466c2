"""Workers run the run the master describes: a master and workers started by hand, as separate
processes, the workers with no toolclash option at all; a worker whose fixed options are not the
master's is refused before any load; each test's settings are re-read, and fingerprinted."""

from __future__ import annotations

import pytest
from psycopg import sql

from harness.config.option import BadOption
from harness.config.run_settings import fingerprint, fixed_options, settings_for_test
from harness.config.settings import file_digest
from harness.distributed.worker_check import Shared, WorkerChecks, refusal
from harness.verdict import evidence
from tests.support import own_master_port, read_report

# A tools module that writes down the isolation level the server ran each of its transactions at.
PROBE = '''
def setup(conn):
    conn.execute("CREATE TABLE IF NOT EXISTS isolation_seen (level text NOT NULL)")
    conn.execute("TRUNCATE isolation_seen")


def record_isolation(tx):
    tx.execute("INSERT INTO isolation_seen (level) VALUES (current_setting('transaction_isolation'))")
'''


def _run_by_hand(locust, master_args: list[str], *worker_args: list[str], timeout: float = 180):
    """A master (headless, expecting one worker per `worker_args`) and its workers, each a process
    started by hand as a user would; their (exit code, stderr)s, master first."""
    port = own_master_port()  # --master-bind-port P --master-port P
    master = locust.start("--master", *port[:2], "--expect-workers", str(len(worker_args)), *master_args)
    workers = [locust.start("--worker", "--master-host", "127.0.0.1", *port[2:], *args, headless=False)
               for args in worker_args]
    return [(run.wait(timeout), run.stderr()) for run in (master, *workers)]


def _servers(servers, schema) -> list[str]:
    return ["--pg-dsn", servers.pg_dsn, "--redis-url", servers.redis_url, "--schema", schema]


def _count(admin, schema, table) -> int:
    return admin.execute(sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(schema, table))).fetchone()[0]


def _error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("toolclash: error:")]


def test_workers_started_with_no_option_run_the_masters_scenario_and_isolation(servers, admin, schema, tmp_path,
                                                                              locust):
    probe = tmp_path / "isolation_probe.py"
    probe.write_text(PROBE)
    path = tmp_path / "report.json"
    results = _run_by_hand(
        locust,
        [*_servers(servers, schema), "--users", "10", "--spawn-rate", "10", "--run-time", "5s",
         "--tools-module", str(probe), "--scenario", "isolation_probe,deadlock", "--isolation", "serializable",
         "--report-json", str(path)],
        [], [],
    )
    (master_code, master_err), *workers = results
    report = read_report(path)
    assert master_code == report["exit_code"], master_err[-3000:]
    assert all(code == 0 for code, _ in workers), [err[-2000:] for _, err in workers]

    # The tools that ran are exactly the master's scenarios', on both workers.
    assert set(report["tools"]) == {"record_isolation", "transfer_credits"}
    assert report["run"]["scenarios"] == ["isolation_probe", "deadlock"]
    assert report["run"]["isolation"] == "serializable" == report["settings"]["isolation"]
    shipped = report["workers"]["shipped"]
    assert len(shipped) == 2 and all(w["calls"] > 0 for w in shipped.values())

    # The server ran every transaction of the tools at the master's isolation level.
    levels = admin.execute(sql.SQL("SELECT level, count(*) FROM {} GROUP BY level").format(
        sql.Identifier(schema, "isolation_seen"))).fetchall()
    recorded = report["tools"]["record_isolation"]
    assert [level for level, _ in levels] == ["serializable"]
    unknown = recorded["indeterminate"] + recorded["cut_off"]
    assert recorded["succeeded"] <= levels[0][1] <= recorded["succeeded"] + unknown

    # Each worker's settings are the master's, and the report says so.
    fingerprints = report["workers"]["settings"]
    assert sorted(fingerprints) == sorted(shipped)
    assert set(fingerprints.values()) == {report["run"]["settings_fingerprint"]}
    assert report["evidence"]["ok"], report["evidence"]


def test_a_worker_with_another_fixed_option_is_refused_before_any_load(servers, admin, schema, tmp_path, locust):
    """The workers' check's real run (what the check says of each option: below): the master and
    the refused worker end with one line each, exit code 2, no traceback; nothing ran."""
    option, master_value, worker_value = "--pg-dsn", servers.pg_dsn, "postgresql://postgres@127.0.0.1:1/elsewhere"
    path = tmp_path / "report.json"
    (master_code, master_err), (good_code, _), (refused_code, refused_err) = _run_by_hand(
        locust,
        [*_servers(servers, schema), "--users", "4", "--spawn-rate", "4", "--run-time", "20s",
         "--report-json", str(path)],
        [], [option, worker_value],
    )
    [line] = _error_lines(master_err)
    assert master_code == 2, master_err[-3000:]
    assert option in line and master_value in line and worker_value in line
    assert "Traceback" not in master_err
    [own_line] = _error_lines(refused_err)
    assert refused_code == 2 and option in own_line
    assert "Traceback" not in refused_err
    assert good_code == 0
    # Nothing ran: no report, no run begun, no call made.
    assert not path.exists()
    assert _count(admin, schema, "run_state") == 0 and _count(admin, schema, "ledger") == 0


class _Node:
    state = "ready"


class _Master:
    """What WorkerChecks reads of a MasterRunner: its connected workers."""

    def __init__(self, *workers: str) -> None:
        self.clients = {worker: _Node() for worker in workers}


@pytest.mark.parametrize("option", ["--pg-dsn", "--tools-module"])
def test_the_check_names_the_option_and_both_values_for_the_master_and_the_worker(tmp_path, option):
    """What the master prints (one line, naming the worker) and the refused worker prints (its
    refusal) when a worker's fixed option is not the master's."""
    mine, other = tmp_path / "mine" / "probe.py", tmp_path / "other" / "probe.py"
    for module, text in ((mine, PROBE), (other, PROBE + "\n# another version\n")):
        module.parent.mkdir()
        module.write_text(text)
    servers = ("postgresql://postgres@127.0.0.1:5432/test", "redis://127.0.0.1:6379/0", "toolclash")
    if option == "--pg-dsn":
        master_value, worker_value = servers[0], "postgresql://postgres@127.0.0.1:1/elsewhere"
        master = Shared(*servers)
    else:  # what the master sends: its settings' tools module, as given, and the file's digest
        master_value, worker_value = str(mine), str(other)
        master = Shared(*servers, str(mine), file_digest(str(mine)))
    good, refused = Shared.given_to_worker(_options()), Shared.given_to_worker(_options(option, worker_value))
    checks = WorkerChecks()

    def ask() -> None:  # each worker answers the master's check, as on_check_message does
        for worker, own in (("w0", good), ("w1", refused)):
            checks.answer(worker, {"test": 1, "refusal": refusal(own, master)})

    [line] = checks.wait(_Master("w0", "w1"), 1, ask)
    assert line.startswith("worker w1: ") and "\n" not in line
    assert option in line and master_value in line and worker_value in line
    own_line = refusal(refused, master)
    assert option in own_line and "\n" not in own_line


def _options(*args: str):
    from locust.argument_parser import get_parser

    from harness.config.declared import add_arguments

    parser = get_parser()
    add_arguments(parser)
    return parser.parse_args(list(args))


def test_each_test_reads_the_per_run_options_again_and_keeps_the_fixed_ones():
    options = _options("--schema", "tc_fixed", "--scenario", "deadlock", "--accounts", "10")
    fixed = fixed_options(options)
    first = settings_for_test(options, fixed)
    # What the web UI's form (text) or the master's spawn message writes into parsed_options.
    options.schema, options.scenario, options.accounts, options.pool_size = "tc_other", "queue", "30", "7"
    second = settings_for_test(options, fixed)
    assert (first.schema, second.schema) == ("tc_fixed", "tc_fixed")
    assert [s.name for s in second.scenarios] == ["queue"]
    assert (second.params.accounts, second.pool_size) == (30, 7)
    assert fingerprint(first) != fingerprint(second)
    options.pool_size = ""  # an empty field of the form: the default
    assert settings_for_test(options, fixed).pool_size is None


@pytest.mark.parametrize(
    "dest, value, says",
    [
        ("accounts", "abc", "--accounts 'abc': give a whole number"),
        ("tool_work", "nan", "--tool-work 'nan': give a finite number"),
        ("isolation", "chaotic", "--isolation 'chaotic': choose one of read_committed"),
        ("accounts", "1", "--accounts 1: must be at least 2"),
    ],
)
def test_a_per_run_value_as_text_is_typed_or_refused_in_one_line(dest, value, says):
    options = _options()
    setattr(options, dest, value)
    with pytest.raises(BadOption) as refused:
        settings_for_test(options, fixed_options(options))
    assert str(refused.value).startswith(says)


def test_the_same_settings_have_the_same_fingerprint_wherever_the_tools_module_lies(tmp_path):
    first, second = tmp_path / "a" / "probe.py", tmp_path / "b" / "probe.py"
    for module in (first, second):
        module.parent.mkdir()
        module.write_text(PROBE)
    fingerprints = {fingerprint(settings_for_test(o, fixed_options(o)))
                    for o in (_options("--tools-module", str(first)), _options("--tools-module", str(second)))}
    assert len(fingerprints) == 1


def test_a_worker_that_ran_other_settings_fails_the_verdict():
    problems = evidence.settings_problems({"w1": "abc", "w2": "def"}, "abc")
    assert [p["kind"] for p in problems] == ["settings_mismatch"] and "w2" in problems[0]["detail"]
    assert evidence.decide(problems, True, []) == (evidence.FAIL, 1)
