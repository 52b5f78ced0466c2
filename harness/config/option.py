"""What declaring an option says (harness.config.declared holds them all): its flag, default and
help, its kind (per run or fixed), its lowest value, whether it shapes the load, whether the
compose file passes it; and how a value given as text is typed."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NoReturn

__all__ = ["BadOption", "Option"]


# What a number's option says of a text that is not one.
_NOT_A: dict[Callable[[str], Any], str] = {int: "give a whole number", float: "give a number"}


class BadOption(ValueError):
    """An option's value makes no sense; the message names the option and the value."""


@dataclass(frozen=True)
class Option:
    """One of toolclash's options: a command-line flag, the environment variable TOOLCLASH_<DEST>
    and the config-file key <flag without -->."""

    flag: str
    default: Any
    help: str
    # Per run: may change from one test to the next, so read again at each test start (Locust
    # forwards the master's to every worker with each spawn message) and offered by the web UI's
    # start form. Fixed: read once when the process starts (the servers reached, the schema claimed).
    per_run: bool
    # What the option's text means. int and float are typed by Locust's parser; any other type
    # (a duration: db.durations) is left as text there, as its default is, and typed by `typed` at
    # each test start: the web UI's form writes what it posts into parsed_options converted to the
    # type of the value there, so any of the type's forms must be a str there.
    type: Callable[[str], Any] = str
    choices: tuple[str, ...] | None = None
    switch: bool = False  # a flag without a value: on when given
    # The value's unit ("ms", "s"): it ends the option's key in the settings summary, and follows
    # the value in the refusal of one below `at_least`.
    unit: str = ""
    at_least: float | None = None
    # Shapes the load: in the settings summary (the report's "settings"), so in the fingerprint a
    # worker's settings are compared by.
    summarized: bool = False
    # docker-compose.yml passes its variable to the master and the workers (.env.example shows it).
    composed: bool = True

    @property
    def dest(self) -> str:
        return self.flag[2:].replace("-", "_")

    @property
    def env_var(self) -> str:
        return f"TOOLCLASH_{self.dest.upper()}"

    @property
    def summary_key(self) -> str:
        return f"{self.dest}_{self.unit}" if self.unit else self.dest

    def parser_arguments(self) -> dict[str, Any]:
        """The keyword arguments of its `add_argument`."""
        given: dict[str, Any] = {"env_var": self.env_var, "default": self.default, "help": self.help}
        if self.switch:
            return {**given, "action": "store_true"}
        return {**given, "type": self.type if self.type in (int, float) else None, "choices": self.choices}

    def typed(self, value: Any) -> Any:
        """`value` as this option's type: argparse gives an int or a float typed, the web UI's form
        and any other type as text ('' for an option without a default: none)."""
        given = value
        if isinstance(value, str):
            text = value.strip()
            if not text and (self.default is None or self.type is not str):
                return None if self.default is None else self._refuse(given, "give a value")
            if self.type is not str:
                try:
                    value = self.type(text)
                except ValueError as exc:  # a type of its own says what it wants
                    self._refuse(given, _NOT_A.get(self.type, str(exc)))
        if isinstance(value, float) and not math.isfinite(value):
            self._refuse(given, "give a finite number")
        if self.choices is not None and value not in self.choices:
            self._refuse(given, f"choose one of {', '.join(self.choices)}")
        return value

    def check_lowest(self, value: Any) -> None:
        """Refuse a value below `at_least` (None, no value, is never below)."""
        if self.at_least is not None and value is not None and value < self.at_least:
            unit = f" {self.unit}" if self.unit else ""
            raise BadOption(f"{self.flag} {value}{unit}: must be at least {self.at_least:g}{unit}")

    def _refuse(self, value: Any, what: str) -> NoReturn:
        raise BadOption(f"{self.flag} {value!r}: {what}")
