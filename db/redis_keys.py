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

    The hold is lost only to another run's value in the key. A key found missing (Redis
    restarted without its data, or the hold expired while Redis was unreachable) is taken again
    and counted (take_claimed_again): the run's keys are still its own, and what Redis lost of
    them is for the audits to find; the reader is told.
    """

    # Renew the hold while it is ours (1), take it again when it is gone (2); 0: another's.
    _RENEW = """local held = redis.call('GET', KEYS[1])
if held == ARGV[1] then redis.call('PEXPIRE', KEYS[1], ARGV[2]) return 1 end
if not held then redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2]) return 2 end
return 0"""
    _RELEASE = "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0"
    _RENEWED, _CLAIMED_AGAIN = 1, 2

    def __init__(self, client: redis.Redis, keys: RedisKeys, holder: str, *, ttl_ms: int = 30_000,
                 renew_every_s: float = 5.0) -> None:
        self._client = client
        self.key = keys.prefix.rstrip(":")
        self._token = f"{holder}:{uuid.uuid4().hex}"
        self._ttl_ms = ttl_ms
        self._renew_every_s = renew_every_s
        self._renewer: gevent.Greenlet[[], None] | None = None
        self.lost = False  # another run holds the keys now: this run's Redis data is not its own
        self._claimed_again = 0  # times the hold was found missing and taken again, since last asked

    def claim(self) -> None:
        """Hold the keys, and keep holding them; raises SchemaRefused when another run does."""
        if not self._client.set(self.key, self._token, nx=True, px=self._ttl_ms):
            holder = self._client.get(self.key) or b"?"
            shown = holder.decode() if isinstance(holder, bytes) else holder
            raise SchemaRefused(
                f"the Redis keys {self.key}:* are in use by another toolclash run ({shown});"
                " use --schema to pick another"
            )
        self._renewer = gevent.spawn(self._renew)

    def _renew(self) -> None:
        while True:
            gevent.sleep(self._renew_every_s)
            try:
                held = self._client.eval(self._RENEW, 1, self.key, self._token, self._ttl_ms)
            except redis.RedisError as exc:
                log.warning("could not renew the hold on %s (%s); trying again", self.key, type(exc).__name__)
                continue
            if held == self._CLAIMED_AGAIN:
                self._claimed_again += 1
                log.warning("the hold on the Redis keys %s:* was gone (Redis restarted, or it expired while Redis was"
                            " unreachable): taken again", self.key)
            elif held != self._RENEWED:
                log.error("the hold on the Redis keys %s:* was lost to another run", self.key)
                self.lost = True
                return

    def take_claimed_again(self) -> int:
        """How many times the hold was found missing and taken again since the last call."""
        taken, self._claimed_again = self._claimed_again, 0
        return taken

    def release(self) -> None:
        if self._renewer is not None:
            self._renewer.kill()
            self._renewer = None
            try:
                self._client.eval(self._RELEASE, 1, self.key, self._token)
            except redis.RedisError as exc:
                log.warning("could not release %s (%s): it expires by itself", self.key, type(exc).__name__)
