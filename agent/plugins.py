"""Load a plugin class from a family registry (``name -> "module:Class"``)."""

from __future__ import annotations

import importlib
from typing import Any


class UnknownPluginError(LookupError):
    """The config names a plugin type that no registry lists."""


def load_plugin(registry: dict[str, str], type_name: str) -> Any:
    """Import and return the class registered under ``type_name``."""
    try:
        dotted = registry[type_name]
    except KeyError:
        raise UnknownPluginError(type_name) from None
    module_name, _, attr = dotted.partition(":")
    return getattr(importlib.import_module(module_name), attr)
