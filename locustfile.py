"""toolclash: many AI agents invoking contended tools on PostgreSQL and Redis at once.

    locust -f locustfile.py --headless --users 50 --run-time 60s [toolclash options]

This file only wires things together: the agent (tasks.agent), the options, and the life
cycle that ends in the audits and the verdict (harness.lifecycle).
"""

from locust import events

from harness import lifecycle
from tasks.agent import Agent

__all__ = ["Agent"]

lifecycle.install(events)
