"""Training methods, selectable by name (``busnb run``, ``05_train.ipynb``)."""
from __future__ import annotations

from .base import Method, Supervised

METHODS: dict[str, type[Method]] = {"supervised": Supervised}


def build_method(name: str, make_net, **kwargs) -> Method:
    if name not in METHODS:
        raise ValueError(f"unknown method {name!r}; choose one of {sorted(METHODS)}")
    return METHODS[name](make_net, **kwargs)

# Methods that `busnb run` trains in 05_train.ipynb for every profile.
RUN_BY_DEFAULT = ("supervised",)
