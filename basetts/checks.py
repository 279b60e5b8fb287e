"""Checks of setting values shared by the settings and every protocol's own: each failure a `ConfigurationError`
that names the setting."""
from __future__ import annotations

import math
from typing import Any, Optional

from .errors import ArgumentTypeError, ConfigurationError


def check_callable(name: str, value: Any) -> None:
    """A callback must be callable (or None): said before anything is sent, not at the first chunk."""
    if value is not None and not callable(value):
        raise ArgumentTypeError(f"{name} must be a function (or None), not {type(value).__name__}")


def is_utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def check_int(name: str, value: Any, low: int, high: Optional[int] = None) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < low or (high is not None and value > high):
        bounds = f">= {low}" + (f" and <= {high}" if high is not None else "")
        raise ConfigurationError(f"{name} must be an integer {bounds}, got {value!r}")


def check_number(
    name: str, value: Any, *, low: float, high: Optional[float] = None, low_open: bool = True,
    required: bool = False,
) -> None:
    if value is None and not required:
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ConfigurationError(f"{name} must be a finite number, got {value!r}")
    too_low = value <= low if low_open else value < low
    if too_low or (high is not None and value > high):
        bounds = f"{'>' if low_open else '>='} {low}" + (f" and <= {high}" if high is not None else "")
        raise ConfigurationError(f"{name} must be {bounds}, got {value!r}")
