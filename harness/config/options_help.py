"""toolclash's options, printed. Locust 2.47's `locust --help` exits before it reads the
locustfile, so it never shows the options a locustfile adds:

    make options      (or: .venv/bin/python -m harness.config.options_help)
"""

from __future__ import annotations

import os

__all__ = ["options_help"]


def options_help(width: int = 100) -> str:
    """The toolclash groups of the help the locust process would print, `width` columns wide."""
    from locust.argument_parser import get_parser

    from harness.config.declared import add_arguments

    parser = get_parser()
    add_arguments(parser)
    os.environ["COLUMNS"] = str(width)  # argparse wraps to it
    text = parser.format_help()
    start = text.index("\ntoolclash:")
    end = text.index("\n\n", text.index("\ntoolclash, per test:") + 1)
    return text[start:end].strip() + "\n"


if __name__ == "__main__":
    print(options_help(), end="")
