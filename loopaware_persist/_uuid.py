"""Building many :class:`uuid.UUID` objects fast (decoding checkpoints, listing pids)."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any, Final

__all__ = ("SAFE_UNKNOWN", "UUID_SETTERS", "new_uuid", "uuid_from_int")

#: ``object.__new__``: a UUID with no slot set yet
new_uuid: Any = object.__new__
_UUID = uuid.UUID
#: what ``uuid.UUID(int=...)`` sets ``is_safe`` to (an enum lookup per call costs more
#: than the rest)
SAFE_UNKNOWN: Final = uuid.SafeUUID.unknown
# CPython's UUID is a slotted class: its slots are set directly, as its __setstate__
# (pickle's path) does, without the constructor's argument parsing (a third of the cost).
_SLOTS: dict[str, Any] = dict(vars(uuid.UUID))
#: the setters of the ``int`` and ``is_safe`` slots, or ``None`` where UUID has no slots
#: by those names (then :func:`uuid_from_int` calls the constructor)
UUID_SETTERS: Final[tuple[Callable[[Any, Any], None], Callable[[Any, Any], None]] | None] = (
    (_SLOTS["int"].__set__, _SLOTS["is_safe"].__set__)
    if {"int", "is_safe"} <= _SLOTS.keys()
    else None
)
_SETTERS = UUID_SETTERS


def uuid_from_int(value: int) -> uuid.UUID:
    """:param value: the 128-bit integer, already checked to be in range
    :return: ``uuid.UUID(int=value)``, built without re-checking it
    """
    if _SETTERS is None:
        return uuid.UUID(int=value)
    set_int, set_is_safe = _SETTERS
    made = new_uuid(_UUID)
    set_int(made, value)
    set_is_safe(made, SAFE_UNKNOWN)
    return made  # type: ignore[no-any-return]
