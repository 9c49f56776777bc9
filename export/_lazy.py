"""Lazy public names for a package ``__init__``: ``name -> module`` imported on first use.

The Medusa-facing packages (``detect``, ``landmark``, ``crop``, ...) export their eager classes,
which build on :mod:`facecrop.pipeline`, while the pipeline imports those packages' functional
cores; importing the classes only when asked for keeps that from being a cycle, and keeps
``import facecrop.runtime`` free of the build side.
"""

from __future__ import annotations

from importlib import import_module


def lazy_names(package: str, names: dict[str, str]):
    """``(__getattr__, __all__)`` for ``package`` exporting ``names`` (name -> module)."""

    def __getattr__(name: str):
        if name in names:
            return getattr(import_module(names[name]), name)
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    return __getattr__, sorted(names)
