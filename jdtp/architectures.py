"""Architectures by name (``config.model.name``) and the ``model`` section of a config.

Each entry is a builder ``(input_shape, num_classes, **options) -> Network``, a function or a
``functools.partial`` that fixes some of its keyword arguments; its other keyword-only arguments,
with their defaults, are the options of the config's ``model`` section (:func:`model_config`).
Adding an architecture is its module (blocks and a builder) and one entry here.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Mapping
from typing import Any

import ml_collections

from jdtp import config_checks as cc
from jdtp import networks, resnet

Builder = Callable[..., networks.Network]

ARCHITECTURES: dict[str, Builder] = {
    "lenet": networks.lenet,
    "simple_vgg": networks.simple_vgg,
    "resnet18": resnet.resnet18,
    "resnet34": resnet.resnet34,
}


def names() -> tuple[str, ...]:
    return tuple(sorted(ARCHITECTURES))


def get(name: str) -> Builder:
    cc.check(name in ARCHITECTURES, f"config.model.name={name!r}, expected one of {names()}")
    return ARCHITECTURES[name]


def options(name: str) -> dict[str, Any]:
    """The builder's keyword-only options and their defaults (without those a partial fixes)."""
    builder = get(name)
    fixed = builder.keywords if isinstance(builder, functools.partial) else {}
    return {
        p.name: p.default
        for p in inspect.signature(builder).parameters.values()
        if p.kind is inspect.Parameter.KEYWORD_ONLY and p.name not in fixed
    }


def model_config(name: str, **overrides) -> ml_collections.ConfigDict:
    """A config ``model`` section: ``name`` and the builder's options with their defaults."""
    c = ml_collections.ConfigDict({"name": name, **options(name)})
    for k, v in overrides.items():
        cc.check(k in c, f"model {name!r} has no option {k!r}; options: {sorted(options(name))}")
        c[k] = v
    return c


def build(name: str, input_shape, num_classes: int, **kwargs) -> networks.Network:
    """The architecture ``name`` for the given input shape and classes; ``kwargs`` are its options."""
    known = options(name)
    unknown = set(kwargs) - set(known)
    cc.check(not unknown, f"model {name!r} has no option(s) {sorted(unknown)}; options: {sorted(known)}")
    kwargs = {k: tuple(v) if isinstance(v, list) else v for k, v in kwargs.items()}
    return get(name)(tuple(input_shape), int(num_classes), **kwargs)


def build_from_config(model: Mapping[str, Any], input_shape, num_classes: int) -> networks.Network:
    """The network of a config's ``model`` section for the dataset's input shape and classes.

    Raises:
      config_checks.ConfigError: an unknown name or option, or a value the builder rejects.
    """
    kwargs = {k: v for k, v in model.items() if k != "name"}
    try:
        return build(model["name"], input_shape, num_classes, **kwargs)
    except cc.ConfigError:
        raise
    except (TypeError, ValueError) as e:
        raise cc.ConfigError(f"config.model: {e}") from e
