"""Building many :class:`uuid.UUID` objects fast (decoding checkpoints, listing pids)."""

from __future__ import annotations

import uuid
from typing import Any

__all__ = ("uuid_from_int",)

_new: Any = object.__new__
_UUID = uuid.UUID
_SAFE_UNKNOWN = uuid.SafeUUID.unknown  # an enum lookup per call costs more than the rest
# CPython's UUID is a slotted class: its slots are set directly, as its __setstate__
# (pickle's path) does, without the constructor's argument parsing (a third of the cost).
_SLOTS: dict[str, Any] = dict(vars(uuid.UUID))
_SETTERS = (
    (_SLOTS["int"].__set__, _SLOTS["is_safe"].__set__)
    if {"int", "is_safe"} <= _SLOTS.keys()
    else None
)


def uuid_from_int(value: int) -> uuid.UUID:
    """:param value: the 128-bit integer, already checked to be in range
    :return: ``uuid.UUID(int=value)``, built without re-checking it
    """
    if _SETTERS is None:
        return uuid.UUID(int=value)
    set_int, set_is_safe = _SETTERS
    made = _new(_UUID)
    set_int(made, value)
    set_is_safe(made, _SAFE_UNKNOWN)
    return made  # type: ignore[no-any-return]
