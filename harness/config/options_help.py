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
    # What parser.format_help() prints of each group, for toolclash's groups only: they come
    # after Locust's and before its epilog.
    formatter = parser._get_formatter()
    for group in parser._action_groups:
        if group.title.startswith("toolclash"):
            formatter.start_section(group.title)
            formatter.add_text(group.description)
            formatter.add_arguments(group._group_actions)
            formatter.end_section()
    return formatter.format_help().strip() + "\n"


if __name__ == "__main__":
    print(options_help(), end="")
