"""Training algorithms as plug-ins, registered by name (``config.algorithm``).

Each module in this package implements :class:`jdtp.algorithms.base.Algorithm`
and registers its class with :func:`register`. Adding an algorithm is one
module here, its import below, a config (or a variant) and its tests; ``jdtp.train``
never names an algorithm.
"""

from __future__ import annotations

# Importing a module registers its algorithms.
from jdtp.algorithms import bp, ddtp, dtp, parallel_dtp, vanilla  # noqa: F401
from jdtp.algorithms.base import Algorithm, TrainState, make_gmp_fn, make_train_steps
from jdtp.algorithms.registry import (
    add_sections,
    all_sections,
    apply_variant,
    check_sections,
    create,
    get,
    names,
    register,
    switch,
    variants,
)

__all__ = [
    "Algorithm",
    "TrainState",
    "add_sections",
    "all_sections",
    "apply_variant",
    "check_sections",
    "create",
    "get",
    "make_gmp_fn",
    "make_train_steps",
    "names",
    "register",
    "switch",
    "variants",
]
