"""Errors graphrec raises for bad input; the CLI prints their message without a traceback."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


class GraphrecError(Exception):
    """Base class of errors that carry a complete, user-facing message."""


class InputError(GraphrecError):
    """An input file cannot be read: missing, empty, corrupt, or with the wrong delimiter."""


class SchemaError(GraphrecError):
    """An input file lacks a required column or holds a column of the wrong type."""


class RejectedInputError(GraphrecError):
    """An input file has a larger share of bad rows than the configured threshold allows."""

    def __init__(self, message: str, report: dict, quarantine: object = None) -> None:
        super().__init__(message)
        self.report = report
        self.quarantine = quarantine


class ConfigError(GraphrecError, ValueError):
    """A setting has a value it cannot take; the message names the option and what it expects."""


def check_settings(group: str, settings: object, rules: dict[str, tuple[Callable[[Any], bool], str]]) -> None:
    """Raise a ConfigError naming every field of `settings` that breaks its rule (field -> (test, what it must
    be)), so nonsense such as a negative threshold stops when the config is read, not deep inside a run."""
    broken = [
        f"{group}.{name} must be {expected}, not {getattr(settings, name)!r}"
        for name, (test, expected) in rules.items()
        if not test(getattr(settings, name))
    ]
    if broken:
        raise ConfigError("; ".join(broken))


def positive(value: Any) -> bool:
    """A number above zero."""
    return value is not None and value > 0


def at_least_zero(value: Any) -> bool:
    """A number of zero or more."""
    return value is not None and value >= 0


def fraction(value: Any) -> bool:
    """A number in [0, 1]."""
    return value is not None and 0 <= value <= 1
