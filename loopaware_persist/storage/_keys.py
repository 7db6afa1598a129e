"""Checkpoint keys: a process id plus an optional tag, and the pid tokens that keep a
pid's type (``int``, ``str``, ``uuid.UUID``) through any storage."""

from __future__ import annotations

import re
import uuid
from typing import Any, TypeAlias

import attrs

from loopaware_persist._errors import EncodeError, StorageError
from loopaware_persist._uuid import uuid_from_int

__all__ = ("CheckpointKey", "KeyToken", "Pid", "pid_from_token", "pid_token")

#: What a process id may be: plumpy uses UUIDs, AiiDA uses ints, tests use strings.
Pid: TypeAlias = int | str | uuid.UUID

#: A stored key as :meth:`Storage.list_key_tokens` reports it: ``(pid token, tag)``,
#: the token being :func:`pid_token` of the pid (turn it back with
#: :func:`pid_from_token`) and the tag ``None`` for the untagged checkpoint.
KeyToken: TypeAlias = tuple[str, str | None]

# Canonical decimal only, so that every int has exactly one token ("i:012",
# "i:+1" and "i:1_0" would otherwise all decode to ints that have another one).
_INT_TOKEN = re.compile(r"-?[1-9][0-9]*|0", re.ASCII)
_UUID_TOKEN = re.compile(r"[0-9a-f]{32}", re.ASCII)


def _describe_accepted() -> str:
    return "Use an int (not a bool), a str or a uuid.UUID"


def _check_text(value: str, *, what: str) -> None:
    # Backends store keys as UTF-8 (file names, SQLite TEXT, PostgreSQL text);
    # a lone surrogate cannot be encoded there, so refuse it up front, the same
    # way for every backend, instead of failing halfway through a write.
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        msg = (
            f"The checkpoint {what} {value!r} is not valid Unicode (it contains a lone "
            f"surrogate at index {exc.start}), so no storage can keep it. "
            f"Decode it with errors='replace' or use another {what}."
        )
        raise EncodeError(msg) from None


def _validate_pid(_instance: object, _attribute: object, pid: Any) -> None:
    if isinstance(pid, bool) or not isinstance(pid, (int, str, uuid.UUID)):
        msg = (
            f"Unsupported checkpoint pid type {type(pid)!r} ({pid!r}). "
            f"{_describe_accepted()} as the process id."
        )
        raise EncodeError(msg)
    if isinstance(pid, str):
        _check_text(pid, what="pid")


def _validate_tag(_instance: object, _attribute: object, tag: Any) -> None:
    if tag is not None and not isinstance(tag, str):
        msg = f"Unsupported checkpoint tag type {type(tag)!r} ({tag!r}). Use a str or None."
        raise EncodeError(msg)
    if tag is not None:
        _check_text(tag, what="tag")


@attrs.frozen
class CheckpointKey:
    """Where a checkpoint lives: a process id and an optional tag.

    ``CheckpointKey(12)``, ``CheckpointKey("12")`` and ``CheckpointKey(12, "")``
    are three different keys: pids keep their type and ``None`` is not ``""``.

    :param pid: the process id; an ``int`` (``bool`` is refused), ``str`` or
        :class:`uuid.UUID`
    :param tag: the checkpoint tag, ``None`` for the untagged checkpoint
    :raises EncodeError: if the pid or tag has an unsupported type or is not
        valid Unicode
    """

    pid: Pid = attrs.field(validator=_validate_pid)
    tag: str | None = attrs.field(default=None, validator=_validate_tag)
    # Every backend needs the token (file names, SQL parameters, sorting), so
    # it is computed once; it is a function of pid, hence left out of eq/hash.
    _token: str = attrs.field(init=False, eq=False, repr=False)

    def __attrs_post_init__(self) -> None:
        object.__setattr__(self, "_token", pid_token(self.pid))

    @classmethod
    def _from_storage(cls, token: str, tag: str | None) -> CheckpointKey:
        """Rebuild a key read back from a backend, skipping validation.

        Listing thousands of records builds thousands of keys; those read back
        are valid by construction (``pid_from_token`` checked the token, and
        text decoded from UTF-8 holds no lone surrogate).

        :param token: a pid token as stored
        :param tag: the tag as stored
        :raises StorageError: if ``token`` is malformed
        :return: the key
        """
        key = object.__new__(cls)
        object.__setattr__(key, "pid", pid_from_token(token))
        object.__setattr__(key, "tag", tag)
        object.__setattr__(key, "_token", token)
        return key

    @property
    def token(self) -> str:
        """The pid's typed text token, see :func:`pid_token`."""
        return self._token

    def sort_key(self) -> tuple[str, int, str]:
        """The order every :meth:`Storage.list` returns: pid token, then tag, ``None`` first.

        :return: a tuple that sorts keys deterministically across pid types
        """
        tag = self.tag
        return (self._token, 0 if tag is None else 1, tag or "")


def pid_token(pid: Pid) -> str:
    """Turn a pid into a typed text token: ``"i:12"``, ``"u:<32 hex>"`` or ``"s:<text>"``.

    The mapping is injective (``12`` and ``"12"`` differ) and reversed by
    :func:`pid_from_token`, so listings give back pids with their original type.

    :param pid: an ``int``, ``str`` or :class:`uuid.UUID`
    :raises EncodeError: if ``pid`` has another type (``bool`` included)
    :return: the token
    """
    if isinstance(pid, bool):
        pass  # falls through to the error below: True is not the pid 1
    elif isinstance(pid, int):
        try:
            # int() first: an IntEnum's str() would be its name, not its value.
            return f"i:{int(pid)}"
        except ValueError as exc:  # beyond sys.get_int_max_str_digits()
            msg = f"The int pid is too large to store ({exc}). Use a str or uuid.UUID pid."
            raise EncodeError(msg) from None
    elif isinstance(pid, str):
        return f"s:{pid}"
    elif isinstance(pid, uuid.UUID):
        return f"u:{pid.hex}"
    msg = f"Unsupported checkpoint pid type {type(pid)!r} ({pid!r}). {_describe_accepted()}."
    raise EncodeError(msg)


def pid_from_token(token: str) -> Pid:
    """Reverse :func:`pid_token`.

    :param token: a token written by :func:`pid_token`
    :raises StorageError: if ``token`` is not one (stored keys are damaged or
        were written by something else)
    :return: the pid, with its original type
    """
    kind, sep, rest = token.partition(":")
    if sep:
        if kind == "s":
            return rest
        if kind == "i" and _INT_TOKEN.fullmatch(rest):
            return int(rest)
        if kind == "u" and _UUID_TOKEN.fullmatch(rest):
            return uuid_from_int(int(rest, 16))  # UUID(hex=) would re-parse what we checked
    msg = (
        f"Malformed pid token {token!r} in storage: expected 'i:<int>', 'u:<32 hex digits>' "
        f"or 's:<text>'. The stored key was damaged or written by another program; "
        f"remove that record."
    )
    raise StorageError(msg)
