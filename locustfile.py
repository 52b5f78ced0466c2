"""toolclash: many AI agents invoking contended tools on PostgreSQL and Redis at once.

    locust -f locustfile.py --headless --users 50 --run-time 60s [toolclash options]

This file only wires things together: the agent (harness.run.agent), the options, and the life
cycle that ends in the audits and the verdict (harness.run.lifecycle).
"""

from locust import events

from harness.run import lifecycle
from harness.run.agent import Agent

__all__ = ["Agent"]

lifecycle.install(events)
