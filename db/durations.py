"""How long something lasts, given as one option value: a constant, or a distribution each
duration is drawn from (an agent's think time between two calls, a tool's work inside its
transaction).

The forms, all of one value (a bare number is ms; a unit, `ms` or `s`, may follow any number):

    500, 500ms, 2s              a constant
    lognormal:MEDIAN:P99        a heavy tail given by its median and its 99th percentile
    uniform:LOW:HIGH            every duration between the two equally likely
    exponential:MEAN            memoryless, with this mean
    empirical:V1,V2,...         one of the values, each equally likely

`parse_duration` refuses anything else with one line (BadDuration): never a default in place of
what was meant.
"""

from __future__ import annotations

import math
import random
import statistics
from collections.abc import Callable
from dataclasses import dataclass, field

__all__ = ["NO_TIME", "BadDuration", "Duration", "constant", "parse_duration"]

# How many standard deviations of a normal distribution its 99th percentile lies above its
# median: a lognormal's p99 is its median times exp(sigma * this).
_Z99 = statistics.NormalDist().inv_cdf(0.99)
# The forms of fixed arity, and what their parameters are.
_PARAMETERS = {"lognormal": ("MEDIAN", "P99"), "uniform": ("LOW", "HIGH"), "exponential": ("MEAN",)}
_FORMS_HELP = ("give ms (500, 500ms, 2s), lognormal:MEDIAN:P99, uniform:LOW:HIGH, exponential:MEAN or"
               " empirical:V1,V2,...")


class BadDuration(ValueError):
    """A duration's text that says nothing exact; the message is one line."""


@dataclass(frozen=True)
class Duration:
    """A duration: `form` and its parameters in seconds (`params`), drawn anew by each `sample`.
    `text` is the value as given, for the report; two durations of the same form and parameters
    are equal however they were written (500 and 0.5s)."""

    form: str
    params: tuple[float, ...]
    text: str = field(default="", compare=False)

    @property
    def is_constant(self) -> bool:
        return self.form == "constant"

    @property
    def median_s(self) -> float:
        """Half the durations drawn are shorter than this."""
        first = self.params[0]
        if self.form == "uniform":
            return (first + self.params[1]) / 2
        if self.form == "exponential":
            return first * math.log(2)
        if self.form == "empirical":
            return statistics.median(self.params)
        return first  # a constant's value, a lognormal's median

    def sample(self, rng: random.Random) -> float:
        """One duration in seconds, drawn from `rng` (a constant draws nothing from it)."""
        return _SAMPLERS[self.form](rng, self.params)

    def __str__(self) -> str:
        return self.text


def _lognormal(rng: random.Random, params: tuple[float, ...]) -> float:
    median, p99 = params
    return rng.lognormvariate(math.log(median), math.log(p99 / median) / _Z99)


_SAMPLERS: dict[str, Callable[[random.Random, tuple[float, ...]], float]] = {
    "constant": lambda rng, params: params[0],
    "lognormal": _lognormal,
    "uniform": lambda rng, params: rng.uniform(*params),
    "exponential": lambda rng, params: rng.expovariate(1.0 / params[0]),
    "empirical": lambda rng, params: rng.choice(params),
}


def constant(seconds: float) -> Duration:
    """Always `seconds`."""
    return Duration("constant", (seconds,), f"{seconds * 1000:g}")


NO_TIME = constant(0.0)


def _seconds(value: str, within: str) -> float:
    """One value of the duration `within` in seconds: a number of ms, or one followed by its unit,
    ms or s. A refusal names the value when it is not the whole text (which its caller names)."""
    number, per_second = value, 1000.0
    for unit, unit_per_second in (("ms", 1000.0), ("s", 1.0)):
        if value.endswith(unit):
            number, per_second = value.removesuffix(unit), unit_per_second
            break
    named = "" if value == within else f"{value!r}: "
    try:
        seconds = float(number) / per_second
    except ValueError:
        wanted = "give ms, or a number and its unit (500, 500ms, 2s)" if named else _FORMS_HELP
        raise BadDuration(f"{named}not a duration: {wanted}") from None
    if not math.isfinite(seconds):
        raise BadDuration(f"{named}give a finite number")
    if seconds < 0:
        raise BadDuration(f"{named}a duration is never negative")
    return seconds


def _shown(seconds: float) -> str:
    return f"{seconds * 1000:g} ms" if seconds < 1 else f"{seconds:g} s"


def parse_duration(text: str) -> Duration:
    """The duration `text` says (see the module's docstring); BadDuration otherwise."""
    text = text.strip()
    form, colon, rest = text.partition(":")
    if not colon:
        return Duration("constant", (_seconds(text, text),), text)
    if form == "empirical":
        if not rest.strip():
            raise BadDuration("empirical: give at least one value, e.g. empirical:1s,2s,5s")
        return Duration(form, tuple(_seconds(value.strip(), text) for value in rest.split(",")), text)
    arity = _PARAMETERS.get(form)
    if arity is None:
        raise BadDuration(f"unknown form {form!r}: {_FORMS_HELP}")
    values = rest.split(":")
    if len(values) != len(arity):
        raise BadDuration(f"{form} takes {':'.join(arity)}, e.g. {form}:{':'.join(('1s', '5s')[:len(arity)])}")
    params = tuple(_seconds(value.strip(), text) for value in values)
    if form == "lognormal" and params[0] == 0:
        raise BadDuration("the median must be above 0")
    if form == "lognormal" and params[1] <= params[0]:
        raise BadDuration(f"the p99 ({_shown(params[1])}) must be above the median ({_shown(params[0])})")
    if form == "uniform" and not params[0] < params[1]:
        raise BadDuration(f"LOW ({_shown(params[0])}) must be below HIGH ({_shown(params[1])}); for always the same"
                          " duration give one value")
    if form == "exponential" and params[0] == 0:
        raise BadDuration("the mean must be above 0")
    return Duration(form, params, text)
