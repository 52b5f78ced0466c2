"""Test fixtures: the real PostgreSQL and Redis, reached once per session; the `locust` command;
the reference MCP tool server; Chromium; and the markers that sort the tests into tiers
(tests/README.md).

The servers are this machine's when TOOLCLASH_TEST_PG_DSN / TOOLCLASH_TEST_REDIS_URL are set,
the embedded ones (started here, stopped at the end) otherwise. If a server cannot be reached
the whole run stops at once: no test of this project is meaningful without them.

A test's markers follow from the fixtures it uses (tests/support.py's FIXTURE_MARKERS), never by hand:
`make test-fast` deselects the slow tiers by marker, and a test that starts `locust` without
taking the `locust` fixture fails (tests/support.py's LocustProcess checks).
"""

from __future__ import annotations

# As in the locust process: patch before psycopg is imported, so that psycopg picks its
# gevent-cooperative wait and greenlets in the tests really overlap.
from gevent import monkey

monkey.patch_all()

import os  # noqa: E402
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import psycopg
import pytest
import redis
from psycopg import sql
from psycopg.conninfo import make_conninfo

from db.connect import ServiceUnreachable, probe_postgres, probe_redis
from db.embedded import EmbeddedPostgres, EmbeddedRedis, make_run_dir, remove_run_dir
from db.redis_keys import RedisKeys
from tests import support


@pytest.hookimpl(tryfirst=True)  # before -m deselects by marker
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Each test gets the marker of every fixture of support.FIXTURE_MARKERS it uses, directly
    or through another fixture; then support.LOCUST_TESTS holds the tests that may start `locust`."""
    for item in items:
        for fixture, marker in support.FIXTURE_MARKERS.items():
            if fixture in getattr(item, "fixturenames", ()):
                item.add_marker(marker)
    support.LOCUST_TESTS = {item.nodeid for item in items if item.get_closest_marker("locust")}


@pytest.fixture
def locust() -> Iterator[support.Locust]:
    """Starts the real `locust` command (tests/support.py's Locust): the test gets the `locust`
    marker. What it started and still runs at the test's end is killed."""
    starter = support.Locust()
    try:
        yield starter
    finally:
        starter.close()


@dataclass(frozen=True)
class TestServers:
    pg_dsn: str
    redis_url: str

    def args(self, schema: str) -> list[str]:
        """The `locust` options that point a run at these servers, in a schema of its own."""
        return ["--pg-dsn", self.pg_dsn, "--redis-url", self.redis_url, "--schema", schema]


@pytest.fixture(scope="session")
def servers() -> Iterator[TestServers]:
    pg_dsn = os.environ.get("TOOLCLASH_TEST_PG_DSN")
    redis_url = os.environ.get("TOOLCLASH_TEST_REDIS_URL")
    run_dir = make_run_dir() if not (pg_dsn and redis_url) else None
    embedded: list[EmbeddedPostgres | EmbeddedRedis] = []
    try:
        if not pg_dsn:
            embedded.append(EmbeddedPostgres(run_dir))
            pg_dsn = embedded[-1].start()
        if not redis_url:
            embedded.append(EmbeddedRedis(run_dir))
            redis_url = embedded[-1].start()
        probe_postgres(pg_dsn, "TOOLCLASH_TEST_PG_DSN or the embedded default")
        probe_redis(redis_url, "TOOLCLASH_TEST_REDIS_URL or the embedded default")
    except ServiceUnreachable as exc:
        for server in embedded:
            server.stop()
        pytest.exit(f"no real server to test against: {exc}", returncode=2)
    database, test_dsn = _database_of_our_own(pg_dsn)
    yield TestServers(test_dsn, redis_url)
    _drop_database(pg_dsn, database)
    for server in reversed(embedded):
        server.stop()
    if run_dir is not None:
        remove_run_dir(run_dir)


def _database_of_our_own(dsn: str) -> tuple[str, str]:
    """A database for this test session, and its DSN. pg_stat_database counts deadlocks and
    commits per database, and the tests compare them with the harness's: a database of the
    session's own keeps other runs on the same server (another checkout's tests) out of them."""
    name = f"toolclash_test_{uuid.uuid4().hex[:8]}"
    try:
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    except psycopg.Error as exc:
        pytest.exit(f"the tests need a database of their own and could not create one: {exc}".splitlines()[0],
                    returncode=2)
    return name, make_conninfo(dsn, dbname=name)


def _drop_database(dsn: str, name: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


@pytest.fixture
def admin(servers: TestServers) -> Iterator[psycopg.Connection]:
    """An autocommit session of the test's database owner."""
    with psycopg.connect(servers.pg_dsn, autocommit=True) as conn:
        yield conn


@pytest.fixture
def schema(servers: TestServers, admin: psycopg.Connection) -> Iterator[str]:
    """A schema name of the test's own, dropped afterwards with its Redis keys."""
    name = f"tc_test_{uuid.uuid4().hex[:10]}"
    yield name
    admin.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(name)))
    with redis.Redis.from_url(servers.redis_url) as client:
        RedisKeys(name).clear(client)


@pytest.fixture
def toolserver(servers: TestServers) -> Iterator[support.ToolServer]:
    """Starts the reference MCP tool server (`python -m toolserver`) on the test's servers
    (tests/support.py's ToolServer): the test gets the `mcp` marker. What it started and still
    runs at the test's end is killed."""
    starter = support.ToolServer(servers.pg_dsn, servers.redis_url)
    try:
        yield starter
    finally:
        starter.close()


_BROWSER_INSTALL = "apt-get install -y chromium chromium-driver"


@pytest.fixture(scope="session")
def browser():
    """Headless Chromium through Selenium, for the tests that look at what a user sees. Without
    Chromium the browser tests are skipped, naming the install command; with CI=true a missing
    browser is a failure, never a skip."""
    from shutil import which

    binary, driver = which("chromium"), which("chromedriver")
    if binary is None or driver is None:
        missing = "chromium" if binary is None else "chromedriver"
        message = f"{missing} is not installed: {_BROWSER_INSTALL}"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1400,1000"):
        options.add_argument(flag)
    driver_process = webdriver.Chrome(options=options, service=Service(driver))
    try:
        yield driver_process
    finally:
        driver_process.quit()
