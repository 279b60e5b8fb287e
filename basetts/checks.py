"""Checks of setting values shared by the settings and every protocol's own: each failure a `ConfigurationError`
that names the setting."""
from __future__ import annotations

import math
import os
from typing import Any, Optional

from .errors import ArgumentTypeError, ConfigurationError


def check_callable(name: str, value: Any) -> None:
    """A callback must be callable (or None): said before anything is sent, not at the first chunk."""
    if value is not None and not callable(value):
        raise ArgumentTypeError(f"{name} must be a function (or None), not {type(value).__name__}")


def check_writable(path: "os.PathLike[str] | str", setting: str = "") -> None:
    """A `ConfigurationError` now, before anything is sent, if `path` cannot be created where it is (its folder
    missing or not writable, or a folder of that name): a file written as a call goes is opened only then.
    `setting`: what the message names as the place the path came from."""
    full = os.path.abspath(os.fspath(path))
    folder = os.path.dirname(full)
    what = f"Cannot write {os.fspath(path)!r}" + (f" ({setting})" if setting else "")
    if os.path.isdir(full):
        raise ConfigurationError(f"{what}: it is a folder")
    if not os.path.isdir(folder):
        raise ConfigurationError(f"{what}: the folder {folder} does not exist")
    if not os.access(folder, os.W_OK) or (os.path.exists(full) and not os.access(full, os.W_OK)):
        raise ConfigurationError(f"{what}: no permission to write there")


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
