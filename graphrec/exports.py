"""Lazy public names for the stage packages (PEP 562): `from graphrec.graph import load_snapshot` works, while
importing a package, or only its light `config` module, loads none of its heavy dependencies."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any


def lazy_exports(package: str, exports: dict[str, str]) -> tuple[Callable[[str], Any], list[str]]:
    """A module `__getattr__` that imports `package.<module>` on first use of one of its names, and `__all__`.

    Args:
        package: the package's `__name__`.
        exports: public name -> the submodule (of `package`) that defines it.
    """

    def __getattr__(name: str) -> Any:
        if name not in exports:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        return getattr(importlib.import_module(f"{package}.{exports[name]}"), name)

    return __getattr__, sorted(exports)
