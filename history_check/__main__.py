"""python -m history_check FILE [--consistency-model MODEL] [--format F] [--json] [--edn OUT]

Checks a list-append history (Elle's EDN or JSON, or a toolclash --history file) against a
consistency model (default serializable) and prints the answer: a summary, or with --json the
whole answer as JSON. --edn OUT also writes the history as Elle's EDN, for Elle itself. Exit
status 0 when valid, 1 when not (or unknown), 2 on bad input: one line on stderr."""

from __future__ import annotations

import argparse
import json
import sys

from history_check.check import DEFAULT_BUDGET, Answer, check, cycle_text, validity
from history_check.formats import FORMATS, parse, to_edn
from history_check.history import BadHistory
from history_check.models import UnknownModel


class _Usage(Exception):
    pass


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        raise _Usage(message)


def _arguments(argv: list[str]) -> argparse.Namespace:
    parser = _Parser(prog="python -m history_check", description=__doc__.split("\n\n")[1])
    parser.add_argument("file", help="the history: EDN, JSON, or a toolclash --history file (- for stdin)")
    parser.add_argument("--consistency-model", "-m", default="serializable",
                        help="the model the history must keep (Elle's names; default serializable)")
    parser.add_argument("--format", choices=FORMATS, default="auto", help="the file's format (default: detected)")
    parser.add_argument("--json", action="store_true", help="print the whole answer as JSON")
    parser.add_argument("--edn", metavar="OUT", help="also write the history as Elle's EDN to OUT")
    parser.add_argument("--no-realtime", action="store_true",
                        help="infer no real-time order (the history's order is not one clock's)")
    parser.add_argument("--budget", type=int, default=DEFAULT_BUDGET,
                        help=f"cycle search steps per component (default {DEFAULT_BUDGET})")
    return parser.parse_args(argv)


def summary(answer: Answer) -> str:
    lines = [f"{answer.model}: {validity(answer.valid)}"
             f" ({answer.transactions} transactions, {answer.components} cyclic components)"]
    for kind in answer.anomaly_types:
        verdict = "forbidden" if kind in answer.forbidden else "allowed"
        lines.append(f"  {kind}: {answer.counts[kind]} ({verdict})")
        if text := cycle_text(answer.cases[kind][0]):
            lines.append("    " + text)
    if answer.not_models:
        lines.append(f"  not: {', '.join(answer.not_models)}")
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    try:
        args = _arguments(argv)
        if args.budget < 1:
            raise _Usage(f"--budget {args.budget}: at least 1")
        text = sys.stdin.read() if args.file == "-" else open(args.file, encoding="utf-8").read()
        ops = parse(text, args.format)
        answer = check(ops, args.consistency_model, budget=args.budget, realtime=not args.no_realtime)
        if args.edn:
            with open(args.edn, "w", encoding="utf-8") as out:
                out.write(to_edn(ops))
    except (_Usage, BadHistory, UnknownModel, OSError, UnicodeDecodeError) as exc:
        print(f"history_check: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(answer.as_dict(), indent=1) if args.json else summary(answer))
    return 0 if answer.valid is True else 1


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
