"""Config errors and the checks every config section uses: one error naming the field and the fix."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


class ConfigError(ValueError):
    """A config value is missing, out of range, or a per-layer list has the wrong length."""


def check(ok: bool, message: str) -> None:
    """Raise :class:`ConfigError` with ``message`` unless ``ok``."""
    if not ok:
        raise ConfigError(message)


def require(value: Any, field: str) -> None:
    """A key without a default (a placeholder) must be set by the experiment file or the command line."""
    check(
        value is not None,
        f"{field} is not set; set it in the experiment file (configs/) or with --{field}=VALUE",
    )


def check_per_layer(field: str, value: Sequence, expected: int, what: str) -> tuple:
    """A per-layer list must have exactly ``expected`` entries (the reference silently truncates, design §10.6)."""
    value = tuple(value)
    check(
        len(value) == expected,
        f"{field} has {len(value)} entries {value}, expected {expected}: one per {what}",
    )
    return value


def check_each(field: str, values: Sequence, ok, expectation: str) -> None:
    """Every entry of a per-layer list must satisfy ``ok``."""
    for i, v in enumerate(values):
        check(bool(ok(v)), f"{field}[{i}]={v}, expected {expectation}")


def check_one_of(field: str, value: Any, allowed: Sequence) -> None:
    check(value in allowed, f"{field}={value!r}, expected one of {tuple(allowed)}")
