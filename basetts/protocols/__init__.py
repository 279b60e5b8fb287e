"""The protocols basetts speaks, sans-I/O, and the registry that picks one by name. Adding a protocol is a
module here with its `Spec` and a line in `_SPECS` (docs/design.md, "A new protocol")."""
from __future__ import annotations

from typing import Dict, Optional, Tuple

from .base import Conversing, Spec
from .json_audio import SPECS as _JSON_AUDIO
from .orpheus import SPEC as _ORPHEUS
from .orpheus_http import SPEC as _ORPHEUS_HTTP
from .qwen3 import SPEC as _QWEN3
from .xtts import SPEC as _XTTS

_SPECS: Dict[str, Spec] = {spec.name: spec for spec in (_ORPHEUS, _QWEN3, _ORPHEUS_HTTP, _XTTS, *_JSON_AUDIO)}

NAMES: Tuple[str, ...] = tuple(_SPECS)
"""Every protocol's name, the default first."""


def find(name: object) -> Optional[Spec]:
    """The protocol of that name, or None."""
    return _SPECS.get(name) if isinstance(name, str) else None


def spec(name: str) -> Spec:
    """The protocol of that name (a `Settings` has checked that it exists)."""
    return _SPECS[name]


def others(name: str) -> Tuple[Spec, ...]:
    return tuple(found for found in _SPECS.values() if found.name != name)


__all__ = ["NAMES", "Conversing", "Spec", "find", "others", "spec"]
