"""Lazy package exports (PEP 562).

``rtnode.config`` embeds the DVH and segmentation settings models, so importing it must not
import numpy, SimpleITK or torch behind them: the CLI would start slowly, and worker processes
cap their BLAS threads before numpy is first imported. Packages whose ``__init__`` re-exports
heavy modules declare their exports here instead and load them on first use.
"""

from __future__ import annotations

import importlib
from typing import Any, Callable


def lazy_exports(package: str, exports: dict[str, str]) -> Callable[[str], Any]:
    """A module ``__getattr__`` that imports ``package.<exports[name]>`` when name is used."""

    def __getattr__(name: str) -> Any:
        if name in exports:
            return getattr(importlib.import_module(f"{package}.{exports[name]}"), name)
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    return __getattr__
