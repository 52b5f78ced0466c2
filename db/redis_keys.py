"""The harness's Redis keys: all under one prefix per schema, so nothing else is touched."""

from __future__ import annotations

import redis

__all__ = ["RedisKeys"]


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
