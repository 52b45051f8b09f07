"""A module imported on first attribute access.

Every run process imports the whole code location (definitions.py), and pandas alone costs
about half a second of that. Only the audit and the ledger build DataFrames, so their
modules bind ``pd`` to a ``LazyModule``: a sweep's or a drain's run never imports pandas,
and an audit run imports it on its first ``pd.DataFrame``. Annotations that name pandas
types are strings (or ``TYPE_CHECKING`` imports), so defining a function does not import it.
"""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import Any


class LazyModule:
    """Stands for the module ``name`` and imports it on the first attribute read."""

    def __init__(self, name: str) -> None:
        self.__dict__["_name"] = name
        self.__dict__["_module"] = None

    def _load(self) -> ModuleType:
        module = self.__dict__["_module"]
        if module is None:
            module = importlib.import_module(self.__dict__["_name"])
            self.__dict__["_module"] = module
        return module

    def __getattr__(self, attribute: str) -> Any:
        return getattr(self._load(), attribute)

    def __repr__(self) -> str:
        state = "imported" if self.__dict__["_module"] is not None else "not imported yet"
        return f"<lazy module {self.__dict__['_name']} ({state})>"


# The audit's and the ledger's ``pd`` (their modules import it under ``TYPE_CHECKING`` for types).
pandas = LazyModule("pandas")
