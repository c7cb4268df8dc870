"""Checks of user-given settings (profile YAML, command-line options, dataclass configs): each failure is one
ValueError that names the setting, what was expected and what was given."""
from __future__ import annotations

import difflib
import math


def as_int(name: str, value, minimum: int | None = None, maximum: int | None = None) -> int:
    """`value` as an int (an integral float or numeric text counts) within [minimum, maximum]."""
    number = _number(name, value, "an integer")
    if not float(number).is_integer():
        raise ValueError(f"{name}: expected an integer, got {value!r}")
    number = int(number)
    _check_range(name, number, minimum, maximum, "an integer")
    return number


def as_float(name: str, value, minimum: float | None = None, maximum: float | None = None, *,
             above: float | None = None) -> float:
    """`value` as a finite float within [minimum, maximum] and strictly greater than `above`."""
    number = float(_number(name, value, "a number"))
    if not math.isfinite(number):
        raise ValueError(f"{name}: expected a finite number, got {value!r}")
    if above is not None and not number > above:
        raise ValueError(f"{name}: expected a number > {above:g}, got {value!r}")
    _check_range(name, number, minimum, maximum, "a number")
    return number


def as_bool(name: str, value) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"{name}: expected true or false, got {value!r}")
    return value


def as_choice(name: str, value, choices) -> str:
    if value not in choices:
        raise ValueError(f"{name}: expected one of {sorted(choices)}, got {value!r}")
    return value


def check_known(what: str, given, known) -> None:
    """Refuse names in `given` that are not in `known`: one ValueError naming each with the nearest known name."""
    unknown = sorted(set(map(str, given)) - set(known))
    if unknown:
        hints = []
        for name in unknown:
            near = difflib.get_close_matches(name, list(known), n=1, cutoff=0.6)
            hints.append(f"{name!r}" + (f" (did you mean {near[0]!r}?)" if near else ""))
        raise ValueError(f"unknown {what} {', '.join(hints)}; known: {sorted(known)}")


def _number(name: str, value, expected: str):
    if isinstance(value, bool) or value is None:
        raise ValueError(f"{name}: expected {expected}, got {value!r}")
    if isinstance(value, (int, float)):
        return value
    try:
        return float(str(value).strip())
    except ValueError:
        raise ValueError(f"{name}: expected {expected}, got {value!r}") from None


def _check_range(name: str, number, minimum, maximum, expected: str) -> None:
    if minimum is not None and number < minimum:
        raise ValueError(f"{name}: expected {expected} >= {minimum}, got {number}")
    if maximum is not None and number > maximum:
        raise ValueError(f"{name}: expected {expected} <= {maximum}, got {number}")


def first_reason(err: Exception) -> str:
    """The informative first line of an error: load_state_dict opens with a heading line ending in ':'."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    if len(lines) > 1 and lines[0].endswith(":"):
        lines = lines[1:]
    return lines[0].rstrip(".") if lines else type(err).__name__
