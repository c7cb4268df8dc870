"""Command-line options declared once, on the config fields they set.

A field carries its option in its metadata (`option`: help, type, flag); `add_options` adds the options of a
config class to an argparse parser with the field's default, and `config_values` reads them back as the
config's keyword arguments. So each setting has one default and one help text, those of its field. The argparse
types here (`at_least`, `start_step`, ...) make a bad value one line naming the option and what was expected.
"""
from __future__ import annotations

import argparse
from dataclasses import MISSING, fields

from freeecho_core.edm import karras_sigmas
from freeecho_core.validate import as_float, as_int

SCHEDULE_STEPS = len(karras_sigmas()) - 1  # t_i indexes the 64 steps of the schedule


def at_least(minimum: int):
    """An argparse type: an integer >= minimum."""
    def parse(text: str) -> int:
        return as_int("value", text, minimum)
    parse.__name__ = f"integer >= {minimum}"
    return parse


def positive_number(text: str) -> float:
    return as_float("value", text, above=0)


positive_number.__name__ = "finite number > 0"


def finite_number(text: str) -> float:
    return as_float("value", text)


finite_number.__name__ = "finite number"


def start_step(text: str) -> int:
    return as_int("value", text, 0, SCHEDULE_STEPS - 1)


start_step.__name__ = f"start step in 0..{SCHEDULE_STEPS - 1}"


def sampler_steps(text: str) -> int | None:
    """An argparse type: "schedule" (None: the 64-step schedule's own steps after t_i) or an integer >= 2."""
    return None if text == "schedule" else as_int("value", text, 2)


sampler_steps.__name__ = "'schedule' or an integer >= 2"


def option(help: str, type=None, *, flag: str | None = None, many: bool = False, choices=None, shown=str,
           metavar: str | None = None) -> dict:
    """Field metadata for `add_options`: the option's help, argparse type, flag (default --field-name), whether it
    takes several values (a tuple field), the allowed values, how the default is written in the help (a default
    of None is not: the help says what it means) and the value's name in the usage."""
    return {"cli": {"help": help, "type": type, "flag": flag, "many": many, "choices": choices, "shown": shown,
                    "metavar": metavar}}


def cli_fields(config_class, names: list[str] | None):
    """(field, its option metadata) of the fields of `config_class` that are options (only `names`, when given)."""
    unknown = set(names or ()) - {f.name for f in fields(config_class)}
    if unknown:
        raise ValueError(f"{config_class.__name__} has no fields {sorted(unknown)}")
    return [(f, f.metadata["cli"]) for f in fields(config_class)
            if "cli" in f.metadata and (names is None or f.name in names)]


def add_options(parser: argparse.ArgumentParser, config_class, names: list[str] | None = None, *,
                defaults=None) -> None:
    """Add the options of `config_class`'s fields that carry `option` metadata (only `names`, when given), with the
    fields' defaults, or those of the config instance `defaults`."""
    for f, meta in cli_fields(config_class, names):
        default = getattr(defaults, f.name) if defaults is not None else (
            f.default_factory() if f.default is MISSING else f.default)
        shown = ", ".join(map(meta["shown"], default)) if meta["many"] else meta["shown"](default)
        kwargs = {"type": meta["type"], "dest": f.name, "default": list(default) if meta["many"] else default,
                  "help": meta["help"] if shown == "None" else f"{meta['help']} (default: {shown})"}
        if meta["many"]:
            kwargs["nargs"] = "+"
        if meta["choices"] is not None:
            kwargs["choices"] = meta["choices"]
        if meta["metavar"] is not None:
            kwargs["metavar"] = meta["metavar"]
        parser.add_argument(meta["flag"] or "--" + f.name.replace("_", "-"), **kwargs)


def config_values(args: argparse.Namespace, config_class, names: list[str] | None = None) -> dict:
    """The values of `add_options`' options in `args` as keyword arguments of `config_class` (tuples for the
    options of several values, repeats dropped)."""
    return {f.name: tuple(dict.fromkeys(getattr(args, f.name))) if meta["many"] else getattr(args, f.name)
            for f, meta in cli_fields(config_class, names)}
