"""Worker of the malformed-input figure: ``python -m tests.reliability._fuzz_worker``.

It caps its own address space at 1 GiB first, so a decoder that tries a huge
allocation shows up as a ``MemoryError`` instead of swapping the machine, then
loads thousands of seeded mutations of real records through one storage and
prints one JSON line of counts.
"""

from __future__ import annotations

import contextlib
import json
import random
import resource
import struct
import sys
import time
import urllib.parse
import zlib
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

from loopaware_persist import (
    CorruptCheckpointError,
    DecodeError,
    LoopAwarePersistError,
    UnknownTagError,
    UnsafeCheckpointError,
    open_persister,
)
from loopaware_persist.storage import CheckpointKey
from loopaware_persist.storage.file import checkpoint_filename
from tests.axes import local_store_url

from ._support import ALLOW, Budget, canonical, real_records

ADDRESS_SPACE = 1 << 30
PID = "fuzzed"
KEY = CheckpointKey(PID)
_ENV_FIXED = struct.Struct(">4sBBBHQQ")
#: The kinds of damage :func:`mutations` makes, in the order it cycles through them.
DAMAGE_KINDS = ("bitflip", "overwrite", "extend", "splice", "huge-length", "garbage", "truncate")


def mutations(
    records: list[bytes], count: int, rng: random.Random
) -> Iterator[tuple[str, int, bytes]]:
    """Yield ``(kind, source record index, mutated bytes)``.

    First every truncation of the first record (every offset), then seeded
    random bit flips, overwrites, extensions, splices of two records, header
    length fields set to huge values, and garbage, until ``count`` in total.
    """
    first = records[0]
    made = 0
    for cut in range(len(first)):
        yield "truncate", 0, first[:cut]
        made += 1
    kinds = DAMAGE_KINDS
    while made < count:
        kind = kinds[made % len(kinds)]
        index = rng.randrange(len(records))
        data = bytearray(records[index])
        if kind == "bitflip":
            for _ in range(rng.choice((1, 1, 2, 3, 8))):
                bit = rng.randrange(len(data) * 8)
                data[bit // 8] ^= 1 << (bit % 8)
        elif kind == "overwrite":
            start = rng.randrange(len(data))
            run = rng.randint(1, 16)
            data[start : start + run] = rng.randbytes(run)
            data = data[: len(records[index])]
        elif kind == "extend":
            data += rng.randbytes(rng.randint(1, 64))
        elif kind == "splice":
            other = records[rng.randrange(len(records))]
            data = data[: rng.randrange(len(data) + 1)] + other[rng.randrange(len(other) + 1) :]
        elif kind == "huge-length":
            # A length field claiming gigabytes: must fail without allocating them.
            offset = rng.choice((9, 17, 7))
            width = 2 if offset == 7 else 8
            value = rng.choice((2**31, 2**40, 2 ** (8 * width) - 1, len(data) * 1000))
            data[offset : offset + width] = (value % 2 ** (8 * width)).to_bytes(width, "big")
        elif kind == "garbage":
            size = rng.randint(0, 2048)
            data = bytearray(rng.randbytes(size))
            if rng.random() < 0.5:
                data[:4] = b"LAPC"  # garbage that starts like a record
        else:
            data = data[: rng.randrange(len(data))]
        made += 1
        yield kind, index, bytes(data)


def resealed(records: list[bytes], count: int, rng: random.Random) -> Iterator[bytes]:
    """Mutations of the *payload* with both checksums recomputed: fuzz the codec itself."""
    for _ in range(count):
        record = records[rng.randrange(len(records))]
        _, _, flags, codec_len, meta_len, _, _ = _ENV_FIXED.unpack_from(record)
        if flags:
            continue  # compressed payloads: mutating the stream only tests zlib
        head_end = _ENV_FIXED.size + codec_len + meta_len
        payload = bytearray(record[head_end + 8 :])
        for _ in range(rng.randint(1, 4)):
            position = rng.randrange(len(payload))
            if rng.random() < 0.5:
                payload[position] ^= 1 << rng.randrange(8)
            else:
                payload[position] = rng.randrange(256)
        if rng.random() < 0.2:
            payload = payload[: rng.randrange(len(payload))]
        head = bytearray(record[:head_end])
        struct.pack_into(">QQ", head, 9, len(payload), len(payload))
        yield bytes(head) + struct.pack(">II", zlib.crc32(head), zlib.crc32(payload)) + payload


def classify(error: BaseException) -> str:
    if isinstance(error, MemoryError):
        return "MemoryError"
    for known in (CorruptCheckpointError, UnsafeCheckpointError, UnknownTagError):
        if isinstance(error, known):
            return known.__name__
    if isinstance(error, LoopAwarePersistError):
        return f"other typed: {type(error).__name__}"
    return f"untyped: {type(error).__name__}: {error}"[:200]


@contextlib.contextmanager
def _sql_writer(url: str) -> Iterator[Callable[[bytes], None]]:
    """For PostgreSQL: a function that damages the stored row by SQL ``UPDATE`` of its
    ``data`` column, as another program or a damaged page would."""
    import psycopg

    parts = urllib.parse.urlsplit(url)
    query = urllib.parse.parse_qsl(parts.query)
    schema = dict(query)["schema"]
    server = parts._replace(query=urllib.parse.urlencode([q for q in query if q[0] != "schema"]))
    update = f'UPDATE "{schema}".checkpoints SET data = %s, size = %s, version = version + 1'
    with psycopg.connect(urllib.parse.urlunsplit(server), autocommit=True) as conn:

        def write(data: bytes) -> None:
            conn.execute(update, (data, len(data)))

        yield write


def run(
    codec: str, storage: str, count: int, seed: int, tmp: Path, seconds: float, url: str = ""
) -> dict[str, object]:
    """One campaign: mutations of real records stored in ``storage`` and loaded.

    :param url: the store (a PostgreSQL one is made by the caller); empty for a local
        storage, made in ``tmp``
    """
    rng = random.Random(f"{seed}-{codec}-{storage}")
    # Most of the time budget for the stored mutations, the rest for the codec fuzz.
    budget = Budget(count, 0, seconds=0.85 * seconds)
    compressions = (None, "zlib", "zstd")
    records = [data for _, data in real_records(codec, compressions, pid=PID)]
    url = url or local_store_url(storage, tmp)
    written: Counter[str] = Counter()
    outcomes: Counter[str] = Counter()
    by_kind: Counter[str] = Counter()
    listing_failures = 0
    silent_wrong = identical = 0
    examples: list[str] = []
    with contextlib.ExitStack() as stack:
        per = stack.enter_context(open_persister(url, codec=codec, allow=[ALLOW]))
        # PostgreSQL: half the damage written by SQL, half through the storage's put.
        sql = stack.enter_context(_sql_writer(url)) if storage == "postgresql" else None
        originals = [canonical(per, data) for data in records]
        file_path = None
        if storage == "file":
            # Damage the whole file (its own header included), as a disk would.
            per.storage.put(KEY, records[0])
            file_path = Path(per.storage.root) / checkpoint_filename(KEY)  # type: ignore[attr-defined]
            file_records = []
            for data in records:
                per.storage.put(KEY, data)
                file_records.append(file_path.read_bytes())
            sources = file_records
        else:
            sources = records
            per.storage.put(KEY, records[0])  # the row the SQL writes damage
        for i, (kind, _index, data) in zip(budget, mutations(sources, count, rng), strict=False):
            by_kind[kind] += 1
            if file_path is not None:
                file_path.write_bytes(data)
                written["file"] += 1
            elif sql is not None and not i % 2:
                sql(data)
                written["sql update"] += 1
            else:
                per.storage.put(KEY, data)
                written["storage.put"] += 1
            try:
                loaded = per.load_checkpoint(PID)
            except BaseException as error:
                outcome = classify(error)
                if outcome.startswith(("untyped", "other")) and len(examples) < 5:
                    examples.append(f"{kind}: {outcome}")
            else:
                content = per.codec.encode(dict(loaded))
                if content in originals:
                    outcome = "loaded identical"
                    identical += 1
                else:
                    outcome = "SILENT WRONG LOAD"
                    silent_wrong += 1
            outcomes[outcome] += 1
            try:
                per.get_checkpoints()
                per.list_info()
            except CorruptCheckpointError as error:
                if file_path is None:  # only a damaged file's own header breaks a listing
                    outcomes[f"listing {classify(error)}"] += 1
                else:
                    listing_failures += 1  # the file storage refuses to list a damaged file
            except BaseException as error:
                outcomes[f"listing {classify(error)}"] += 1
        # Below the checksums: the codec must refuse with a DecodeError subclass too.
        sealed: Counter[str] = Counter()
        if storage == "memory":
            remaining = budget.started + seconds - time.monotonic()
            sealed_budget = Budget(count // 5, 0, seconds=max(remaining, 1.0))
            for _, data in zip(sealed_budget, resealed(records, count // 5, rng), strict=False):
                try:
                    per.loads(data)
                except DecodeError as error:
                    sealed[classify(error)] += 1
                except BaseException as error:
                    sealed[classify(error)] += 1
                else:
                    sealed["decoded (valid under a forged checksum)"] += 1
    total = sum(outcomes.values())
    refused = outcomes["CorruptCheckpointError"]
    return {
        "codec": codec,
        "storage": storage,
        "mutations": total,
        "campaign": budget.report(),
        "written_via": dict(written),
        "by_kind": dict(by_kind),
        "corrupt_error": refused,
        "named_valid_record": outcomes["UnsafeCheckpointError"] + outcomes["UnknownTagError"],
        "loaded_identical": identical,
        "silent_wrong_loads": silent_wrong,
        "memory_errors": outcomes["MemoryError"],
        "other": {
            k: v for k, v in outcomes.items() if k.startswith(("untyped", "other", "listing"))
        },
        "typed_pct": round(
            100.0
            * (
                total
                - sum(v for k, v in outcomes.items() if k.startswith(("untyped", "other", "Mem")))
            )
            / total,
            3,
        ),
        "listing_refused_corrupt": listing_failures,
        "resealed_codec_fuzz": dict(sealed),
        "examples": examples,
    }


def main() -> None:
    codec, storage, count, seed, tmp, seconds, *url = sys.argv[1:]
    resource.setrlimit(resource.RLIMIT_AS, (ADDRESS_SPACE, ADDRESS_SPACE))
    result = run(codec, storage, int(count), int(seed), Path(tmp), float(seconds), *url)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
