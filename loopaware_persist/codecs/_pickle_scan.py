"""A linear pre-scan of pickle opcodes: what keeps the C unpickler's memory proportional.

CPython's C unpickler (before python/cpython#115952, fixed in 3.14 and not in
3.11) trusts two kinds of numbers in a payload:

* a memo index (``PUT``, ``LONG_BINPUT``): its memo is an array grown to twice
  the index, so the 9 bytes ``]r\\x00\\x00\\x00\\x02.`` allocate 512 MiB;
* a byte count (``BINBYTES``, ``BINBYTES8``, ``BYTEARRAY8``): it allocates the
  object first and then reads into it.

:func:`check_opcodes` walks the opcodes exactly as the unpickler will, before it
runs, and refuses a memo index at or beyond the payload's length (a writer numbers
memo entries from 0, one per opcode at most, so a real index is always smaller)
and a count that runs past the payload's end. The unpickler then allocates at most
16 bytes of memo per payload byte, and never a bytes object larger than the payload.

The fixed-width opcodes (most of a payload), short strings and small big ints are
matched by one regular expression, at C speed; only longer counted ones (strings,
bytes, big ints) and the memo writes are looked at in Python. At the first opcode
the scan does not know, it stops: the unpickler, in step with it up to there,
refuses the same byte.
"""

from __future__ import annotations

import pickletools
import re
from typing import Final

from .._errors import CorruptCheckpointError

__all__ = ("check_opcodes",)

# The counted opcodes: how many bytes hold the count, and whether it is signed.
_COUNTED: Final[dict[str, tuple[int, bool]]] = {
    "SHORT_BINUNICODE": (1, False),
    "SHORT_BINBYTES": (1, False),
    "SHORT_BINSTRING": (1, False),
    "LONG1": (1, False),
    "BINUNICODE": (4, False),
    "BINBYTES": (4, False),
    "BINSTRING": (4, True),
    "LONG4": (4, True),
    "BINUNICODE8": (8, False),
    "BINBYTES8": (8, False),
    "BYTEARRAY8": (8, False),
}
# Left to the Python loop: the counted ones, the memo writes with an index, and STOP.
_BY_HAND: Final = {*_COUNTED, "PUT", "LONG_BINPUT", "STOP"}
# GLOBAL and INST read two lines (module, then name); pickletools' descriptor says one.
_TWO_LINES: Final = {"GLOBAL", "INST"}


_CODE: Final = {op.name: op.code.encode("latin-1")[0] for op in pickletools.opcodes}


def _simple_pattern() -> re.Pattern[bytes]:
    widths: dict[int, list[int]] = {0: [], 1: [], 2: [], 4: [], 8: []}
    lines: list[int] = []
    pairs: list[int] = []
    for op in pickletools.opcodes:
        code = op.code.encode("latin-1")[0]
        size = 0 if op.arg is None else op.arg.n
        if op.name in _BY_HAND:
            continue
        if op.name in _TWO_LINES:
            pairs.append(code)
        elif size == pickletools.UP_TO_NEWLINE:
            lines.append(code)
        else:
            widths[size].append(code)  # a new opcode with another width fails loudly here

    def charset(codes: list[int]) -> bytes:
        return b"[" + b"".join(b"\\x%02x" % code for code in sorted(codes)) + b"]"

    def counted(name: str, longest: int) -> bytes:
        # One branch per length byte (a regex cannot count): the short strings and ints
        # of a payload stay in the C loop. Longer ones stop the match; Python takes them.
        code = _CODE[name]
        lengths = (b"\\x%02x" % n + (b".{%d}" % n if n else b"") for n in range(longest + 1))
        return b"\\x%02x(?:" % code + b"|".join(lengths) + b")"

    # Runs of argument-less opcodes (MARK, EMPTY_LIST, APPENDS, MEMOIZE...) in one
    # step, then the rest most frequent first: an alternation is tried in order. All
    # possessive, so a mismatch stops the match instead of backtracking. (About 30%
    # faster than one opcode per step on the benchmark's medium WorkChain.)
    branches = [
        charset(widths[0]) + rb"++",
        charset(widths[8]) + rb".{8}",
        charset(widths[1]) + rb".",
        charset(widths[4]) + rb".{4}",
        charset(widths[2]) + rb".{2}",
        charset(lines) + rb"[^\n]*+\n",
        charset(pairs) + rb"[^\n]*+\n[^\n]*+\n",
        counted("SHORT_BINUNICODE", 48),
        counted("LONG1", 9),
    ]
    return re.compile(b"(?:" + b"|".join(branches) + b")*+", re.DOTALL)


_SIMPLE: Final = _simple_pattern()
_COUNTS: Final = {_CODE[name]: spec for name, spec in _COUNTED.items()}
_PUT: Final = _CODE["PUT"]
_LONG_BINPUT: Final = _CODE["LONG_BINPUT"]
_STOP: Final = _CODE["STOP"]


def _refuse(what: str, offset: int) -> CorruptCheckpointError:
    msg = (
        f"Malformed pickle payload: {what} at byte {offset}, which no pickler writes. "
        "The record is damaged or crafted; restore it from a backup or delete it."
    )
    return CorruptCheckpointError(msg)


def check_opcodes(data: bytes) -> None:
    """Refuse a pickle whose memo indices or byte counts exceed the payload.

    Time and memory are linear in ``len(data)``; nothing of the payload is built.

    :param data: the pickle payload
    :raises CorruptCheckpointError: naming the opcode and its offset
    """
    size = len(data)
    match = _SIMPLE.match
    pos = 0
    while True:
        # A possessive *+ matches everywhere, if only the empty string.
        pos = match(data, pos).end()  # type: ignore[union-attr]
        if pos >= size:
            return
        op = data[pos]
        spec = _COUNTS.get(op)
        if spec is not None:
            width, signed = spec
            start = pos + 1 + width
            count = int.from_bytes(data[pos + 1 : start], "little", signed=signed)
            if start > size or count < 0 or start + count > size:
                raise _refuse(f"a count of {count} bytes with {size - start} left", pos)
            pos = start + count
        elif op == _LONG_BINPUT:
            index = int.from_bytes(data[pos + 1 : pos + 5], "little")
            if index >= size:
                raise _refuse(f"memo index {index} in a {size}-byte payload", pos)
            pos += 5
        elif op == _PUT:
            end = data.find(b"\n", pos + 1, pos + 22)
            digits = data[pos + 1 : end]
            if end < 0 or not digits.isdigit() or int(digits) >= size:
                raise _refuse(f"memo index {digits[:21]!r} in a {size}-byte payload", pos)
            pos = end + 1
        else:
            # STOP ends the pickle (the codec checks nothing follows); anything else is
            # an opcode the unpickler refuses itself, at this same byte.
            return
