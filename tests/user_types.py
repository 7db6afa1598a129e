"""A user's own classes, at module level so a load can import them (``allow=[__name__]``).

One subclass of every built-in container and scalar a checkpoint may hold, namedtuples
of both kinds, enums, datetime subclasses, a plain class, a nested plumpy ``Savable``
and a WorkChain (:class:`Keeper`) whose context holds whatever a test puts there.
"""

from __future__ import annotations

import collections
import datetime as dt
import decimal
import enum
import errno
import typing
from typing import Any

import plumpy
from plumpy.workchains import WorkChainSpec

__all__ = (
    "FAILURES",
    "Amount",
    "Blob",
    "Buffer",
    "Cell",
    "Clock",
    "Count",
    "Day",
    "Failing",
    "Flags",
    "FrozenTags",
    "Impedance",
    "JobFailed",
    "Keeper",
    "Label",
    "Level",
    "MissingInput",
    "NoPlugin",
    "Note",
    "Ordered",
    "Pair",
    "Phase",
    "Point",
    "Ratio",
    "Record",
    "Rejected",
    "Span",
    "Stamp",
    "Steps",
    "Structure",
    "Tags",
)


class Structure(dict):  # type: ignore[type-arg]
    """A dict with attributes, as AiiDA's ``AttributeDict`` and many user classes are."""


class Steps(list):  # type: ignore[type-arg]
    pass


class Label(str):
    pass


class Count(int):
    pass


class Ratio(float):
    pass


class Impedance(complex):
    pass


class Blob(bytes):
    pass


class Buffer(bytearray):
    pass


class Pair(tuple):  # type: ignore[type-arg]
    pass


class Tags(set):  # type: ignore[type-arg]
    pass


class FrozenTags(frozenset):  # type: ignore[type-arg]
    pass


class Ordered(collections.OrderedDict):  # type: ignore[type-arg]
    pass


Point = collections.namedtuple("Point", "x y")


class Cell(typing.NamedTuple):
    a: Any
    b: Any = None


class Stamp(dt.datetime):
    pass


class Day(dt.date):
    pass


class Clock(dt.time):
    pass


class Span(dt.timedelta):
    pass


class Amount(decimal.Decimal):
    pass


class Phase(enum.Enum):
    RELAX = "relax"
    SCF = "scf"


class Level(enum.IntEnum):
    LOW = 1
    HIGH = 2


class Flags(enum.Flag):
    READ = 1
    WRITE = 2


class Record:
    """A plain class: its ``__dict__`` is its state."""

    def __init__(self, **fields: Any) -> None:
        self.__dict__.update(fields)


class JobFailed(Exception):
    """An exception whose ``__init__`` takes other arguments than it passes on: pickle's
    own reduce calls ``JobFailed(message)`` on load, which fails (CPython gh-76877)."""

    def __init__(self, job: str, code: int) -> None:
        super().__init__(f"job {job!r} failed with exit code {code}")
        self.job = job
        self.code = code


class Rejected(Exception):
    """An exception with a keyword-only argument, kept as an attribute."""

    def __init__(self, message: str, *, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


class MissingInput(FileNotFoundError):
    """An ``OSError`` subclass whose ``__init__`` fills the C fields (errno, filename)."""

    def __init__(self, path: str) -> None:
        super().__init__(errno.ENOENT, "input file missing", path)


class NoPlugin(ImportError):
    """An ``ImportError`` subclass whose ``__init__`` sets ``name`` by keyword."""

    def __init__(self, entry_point: str) -> None:
        super().__init__(f"no plugin for {entry_point!r}", name=entry_point)


class Note(plumpy.persistence.Savable):
    """A plumpy ``Savable`` held as a value inside a context (not a member plumpy bundles)."""

    def __init__(self, **fields: Any) -> None:
        self.__dict__.update(fields)


class Keeper(plumpy.WorkChain):
    """A WorkChain of one step: tests put a value in its context and checkpoint it."""

    @classmethod
    def define(cls, spec: plumpy.ProcessSpec) -> None:
        super().define(spec)
        assert isinstance(spec, WorkChainSpec)
        spec.outline(cls.done)

    def done(self) -> None:
        """Nothing to do: the context is what the tests look at."""


#: The exceptions :class:`Failing` raises, by the name its ``kind`` input gives.
FAILURES: dict[str, typing.Callable[[], BaseException]] = {
    "other arguments": lambda: JobFailed("relax", 137),
    "keyword-only": lambda: Rejected("over quota", reason="disk"),
    "OSError subclass": lambda: MissingInput("/scratch/input.dat"),
    "ImportError subclass": lambda: NoPlugin("core.arithmetic"),
    "builtin": lambda: ValueError("plain", 3),
}


class Failing(plumpy.Process):
    """A process that raises one of :data:`FAILURES` (its ``kind`` input): it ends EXCEPTED."""

    @classmethod
    def define(cls, spec: plumpy.ProcessSpec) -> None:
        super().define(spec)
        spec.input("kind", valid_type=str)

    def run(self) -> None:
        raise FAILURES[self.inputs["kind"]]()
