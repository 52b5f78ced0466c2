"""`python -m toolserver`: toolclash's reference MCP tool server (docs/mcp.md), its options from
the command line or the environment (toolserver.options). Bad input, a port already taken or a
server that cannot be reached is one line on stderr and exit code 2."""

from __future__ import annotations

import sys
from collections.abc import Sequence

from db.connect import ServiceUnreachable, probe_postgres, probe_redis, redact
from toolserver.options import BadOption, parse_options

__all__ = ["main"]


def main(argv: Sequence[str]) -> int:
    try:
        options = parse_options(argv)
        postgres = probe_postgres(options.pg_dsn, options.origin("pg_dsn"))
        redis = probe_redis(options.redis_url, options.origin("redis_url"))
        # The SDK, Starlette and uvicorn take half a second to import: what is refused is said first.
        from toolserver.serve import listening_socket, serve, startup_line

        sock = listening_socket(options)
    except (BadOption, ServiceUnreachable) as exc:
        print(f"toolserver: {redact(str(exc))}", file=sys.stderr)
        return 2
    try:
        serve(options, argv, sock, startup_line(options, sock, postgres, redis))
    except ServiceUnreachable as exc:
        print(f"toolserver: {redact(str(exc))}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
