"""An Elle-style checker of list-append histories, in Python: which anomalies a history shows
(Adya's G0, G1a, G1b, G1c, G-single, G-nonadjacent, G2-item, lost update... by Elle's names),
each with the cycle of transactions that proves it, and whether a consistency model allows
them. It imports nothing of toolclash's harness: `python -m history_check FILE` checks any
history file (docs/history-check.md), and the list_append scenario's audit checks its run."""

from history_check.check import Answer, check
from history_check.formats import parse, to_edn
from history_check.history import BadHistory, Op, build
from history_check.models import UnknownModel

__all__ = ["Answer", "BadHistory", "Op", "UnknownModel", "build", "check", "parse", "to_edn"]
