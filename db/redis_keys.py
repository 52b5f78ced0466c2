"""The harness's Redis keys: all under one prefix per schema, so nothing else is touched."""

from __future__ import annotations

import logging
import uuid

import gevent
import redis

from db.schema import SchemaRefused

__all__ = ["RedisClaim", "RedisKeys"]

log = logging.getLogger(__name__)


class RedisKeys:
    def __init__(self, schema: str) -> None:
        self.prefix = f"toolclash:{schema}:"

    def __call__(self, *parts: object) -> str:
        return self.prefix + ":".join(str(p) for p in parts)

    def clear(self, client: redis.Redis) -> int:
        """Delete every key under the prefix; how many there were."""
        deleted = 0
        batch: list[bytes] = []
        for key in client.scan_iter(match=self.prefix + "*", count=1000):
            batch.append(key)
            if len(batch) == 500:
                deleted += client.unlink(*batch)
                batch.clear()
        if batch:
            deleted += client.unlink(*batch)
        return deleted


class RedisClaim:
    """A run's hold on its Redis keys, beside the schema's advisory lock (db.schema.claim).

    The advisory lock guards one database; two runs on different databases that share one Redis
    would clear and audit each other's keys. So the coordinator also holds one key, the prefix
    itself (outside the prefix's keys, which each run clears), set only if absent and with a
    time to live it renews: a run that dies lets go within that time.
    """

    _TTL_MS = 30_000
    _RENEW_EVERY_S = 5.0
    # Renew or delete the hold only while it is still ours.
    _RENEW = "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end return 0"
    _RELEASE = "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0"

    def __init__(self, client: redis.Redis, keys: RedisKeys, holder: str) -> None:
        self._client = client
        self.key = keys.prefix.rstrip(":")
        self._token = f"{holder}:{uuid.uuid4().hex}"
        self._renewer: gevent.Greenlet | None = None
        self.lost = False  # another run holds the keys now: this run's Redis data is not its own

    def claim(self) -> None:
        """Hold the keys, and keep holding them; raises SchemaRefused when another run does."""
        if not self._client.set(self.key, self._token, nx=True, px=self._TTL_MS):
            holder = self._client.get(self.key)
            raise SchemaRefused(
                f"the Redis keys {self.key}:* are in use by another toolclash run ({(holder or b'?').decode()});"
                " use --schema to pick another"
            )
        self._renewer = gevent.spawn(self._renew)

    def _renew(self) -> None:
        while True:
            gevent.sleep(self._RENEW_EVERY_S)
            try:
                held = self._client.eval(self._RENEW, 1, self.key, self._token, self._TTL_MS)
            except redis.RedisError as exc:
                log.warning("could not renew the hold on %s (%s); trying again", self.key, type(exc).__name__)
                continue
            if not held:
                log.error("the hold on the Redis keys %s:* was lost to another run", self.key)
                self.lost = True
                return

    def release(self) -> None:
        if self._renewer is not None:
            self._renewer.kill()
            self._renewer = None
            try:
                self._client.eval(self._RELEASE, 1, self.key, self._token)
            except redis.RedisError as exc:
                log.warning("could not release %s (%s): it expires by itself", self.key, type(exc).__name__)
