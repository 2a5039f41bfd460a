"""The registry of training algorithms by name (``config.algorithm``) and their config sections."""

from __future__ import annotations

import ml_collections

from jdtp import config_checks as cc
from jdtp.algorithms.base import Algorithm

_REGISTRY: dict[str, type[Algorithm]] = {}


def register(cls: type[Algorithm]) -> type[Algorithm]:
    """Class decorator: make ``cls`` available as ``config.algorithm = cls.name``."""
    if cls.name in _REGISTRY and _REGISTRY[cls.name] is not cls:
        raise ValueError(f"algorithm {cls.name!r} is already registered")
    _REGISTRY[cls.name] = cls
    return cls


def names() -> tuple[str, ...]:
    return tuple(sorted(_REGISTRY))


def get(name: str) -> type[Algorithm]:
    cc.check(name in _REGISTRY, f"config.algorithm={name!r}, expected one of {names()}")
    return _REGISTRY[name]


def all_sections() -> set[str]:
    """Every config section some algorithm owns."""
    return {s for cls in _REGISTRY.values() for s in cls.sections}


def add_sections(config: ml_collections.ConfigDict, name: str) -> None:
    """Add ``name``'s sections (with their defaults) that ``config`` does not have yet."""
    cls = get(name)
    defaults = cls.default_sections()
    for section in cls.sections:
        if section not in config:
            config[section] = defaults[section]


def switch(config: ml_collections.ConfigDict, name: str) -> None:
    """Make ``config`` a config of algorithm ``name``: drop sections it does not use, add its own.

    Keys that the old and the new algorithm's main sections share with the same meaning (same
    name and kind of value, e.g. the per-layer lists of ``dtp`` and ``vanilla_dtp``) are carried
    over; a key that is a list in one and a number in the other (``fb_lr`` of ``parallel_dtp``) is not.
    """
    old = get(config.algorithm)
    new = get(name)
    carried = {}
    if old.sections and new.sections and old.name in config:
        carried = {k: v for k, v in config[old.name].items()}
    for section in set(old.sections) - set(new.sections):
        del config[section]
    config.algorithm = name
    add_sections(config, name)
    if name in config:
        for k, v in carried.items():
            if k in config[name] and _same_kind(config[name][k], v):
                config[name][k] = v


def _same_kind(a, b) -> bool:
    seq = (tuple, list)
    if isinstance(a, seq) or isinstance(b, seq):
        return isinstance(a, seq) and isinstance(b, seq)
    return (
        a is None
        or b is None
        or isinstance(a, type(b))
        or isinstance(b, type(a))
        or (
            isinstance(a, int | float)
            and isinstance(b, int | float)
            and not isinstance(a, bool)
            and not isinstance(b, bool)
        )
    )


def check_sections(config: ml_collections.ConfigDict) -> None:
    """The config must carry exactly the sections of its algorithm (no unused ones)."""
    cls = get(config.algorithm)
    present = {k for k in config.keys() if k in all_sections()}
    missing = set(cls.sections) - present
    extra = present - set(cls.sections)
    cc.check(
        not missing,
        f"config.algorithm={cls.name!r} needs the config section(s) {sorted(missing)}; "
        "build the config from jdtp.config_base.get_base_config or a file in configs/",
    )
    cc.check(
        not extra,
        f"config.algorithm={cls.name!r} does not use the section(s) {sorted(extra)}: choose the algorithm "
        "with a config variant (e.g. configs/lenet_mnist.py:bp), not --config.algorithm",
    )


def variants() -> dict[str, type[Algorithm]]:
    """``{variant: algorithm}``: the experiment-file variants that choose an algorithm (``:bp``)."""
    return {cls.variant: cls for cls in _REGISTRY.values() if cls.variant}


def apply_variant(config: ml_collections.ConfigDict, variant: str) -> None:
    """Make an experiment's ``config`` the config of the algorithm that ``variant`` chooses."""
    cls = variants()[variant]
    switch(config, cls.name)
    cls.adapt_variant(config)


def create(config: ml_collections.ConfigDict, net, steps_per_epoch: int | None = None) -> Algorithm:
    """The algorithm of ``config`` (reads and validates its own sections), bound to ``steps_per_epoch``.

    A run checks the sections once (``jdtp.config_base.validate``) and creates the algorithm once;
    ``steps_per_epoch=None`` leaves the binding to the caller (:meth:`Algorithm.bind`).
    """
    check_sections(config)
    algo = get(config.algorithm)(config, net)
    return algo if steps_per_epoch is None else algo.bind(steps_per_epoch)
