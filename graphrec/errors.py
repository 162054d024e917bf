"""Errors graphrec raises for bad input; the CLI prints their message without a traceback."""

from __future__ import annotations


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
