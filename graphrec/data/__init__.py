"""The data stage: the input contract, readers and adapters of public formats, validation with quarantine, and
the generated shop."""

from __future__ import annotations

import importlib
from typing import Any

# Public names and the module that defines each, imported on first use: importing the package (or its light
# config module) stays cheap, e.g. for the command line's help.
_EXPORTS = {
    "EVENTS": "schema",
    "ITEMS": "schema",
    "CONTENT": "schema",
    "IMPRESSIONS": "schema",
    "EVENT_TYPES": "schema",
    "scan_table": "readers",
    "open_dataset": "adapters",
    "read_contract_dir": "adapters",
    "validate_dataset": "validation",
    "read_validated": "validation",
    "validate_events": "validation",
    "validate_items": "validation",
    "validate_content": "validation",
    "validate_impressions": "validation",
    "validate_table": "validation",
    "generate_shop": "shop",
    "write_shop": "shop",
    "Shop": "shop",
    "InputConfig": "config",
    "ShopConfig": "config",
    "ValidationConfig": "config",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
