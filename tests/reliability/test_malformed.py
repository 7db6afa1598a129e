"""Figure 4: malformed input, up to 5,000 seeded mutations per codec and storage (at
least 1,500, and every kind of damage, when a loaded machine runs out of time first).

Each (codec, storage) campaign runs in a subprocess capped at 1 GiB of address
space (``RLIMIT_AS``), so a decoder that trusts a length field shows up as a
``MemoryError``. Mutations of real plumpy checkpoints (every truncation of one
record, bit flips, overwrites, extensions, splices of two records, huge length
fields, garbage) are stored and loaded; for the file storage the whole file,
its own header included, is damaged on disk. A load must raise
``CorruptCheckpointError`` (or ``UnsafeCheckpointError``/``UnknownTagError`` if the
mutation left a valid record naming something), or return exactly the original.
On PostgreSQL (marked ``integration``) half the damage is written by SQL ``UPDATE``.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from loopaware_persist import CorruptCheckpointError
from loopaware_persist.storage import CheckpointKey
from loopaware_persist.storage.file import FileIO, FileStorage, checkpoint_filename
from tests.axes import store_url

from ._fuzz_worker import DAMAGE_KINDS
from ._support import BUDGET_S, CODECS, HEAVY, HEAVY_TIMEOUT, figure

pytestmark = pytest.mark.timeout(HEAVY_TIMEOUT)

COUNT = 50_000 if HEAVY else 5_000
#: Mutations a loaded 2-core machine still reaches in the budget: past every truncation
#: of the first record (~1,300), so that every kind of damage is in it.
MIN_COUNT = 20_000 if HEAVY else 1_500
SEED = 20261125
ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("codec", CODECS)
def test_malformed_input(tmp_path: Path, storage: str, codec: str) -> None:
    with store_url(storage, tmp_path, "fuzz") as url:
        proc = subprocess.run(
            [
                sys.executable,
                "-m",
                "tests.reliability._fuzz_worker",
                codec,
                storage,
                str(COUNT),
                str(SEED),
                str(tmp_path),
                str(BUDGET_S),
                # A local store is made by the worker in tmp_path, a PostgreSQL one here.
                *([url] if storage == "postgresql" else []),
            ],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=HEAVY_TIMEOUT,  # a safety net only: the worker stops after BUDGET_S
            check=False,
        )
    assert proc.returncode == 0, f"{storage}: {proc.stderr[-3000:]}"
    r = json.loads(proc.stdout.strip().splitlines()[-1])
    # CPython's own _pickle prints this for some forged (checksum-valid) payloads
    # using protocol-5 buffer opcodes; reported, see the README's Reliability notes.
    r["interpreter_errors_on_stderr"] = proc.stderr.count("SystemError")
    r["campaign"]["minimum"] = MIN_COUNT  # the worker runs; this test judges
    figure("malformed_input", address_space_limit="1GiB", seed=SEED, **r)
    total = r["mutations"]
    assert total == r["campaign"]["ran"]
    assert total >= MIN_COUNT, r["campaign"]
    assert set(r["by_kind"]) == set(DAMAGE_KINDS), r["by_kind"]
    if storage == "postgresql":
        assert r["written_via"]["storage.put"] > 0
        assert r["written_via"]["sql update"] > 0
    assert r["memory_errors"] == 0, r
    assert r["silent_wrong_loads"] == 0, r
    assert r["other"] == {}, r  # every refusal is a typed LoopAwarePersistError
    assert r["corrupt_error"] + r["named_valid_record"] + r["loaded_identical"] == total, r
    # The seeded campaign really damages records: nearly all must be refused.
    assert r["corrupt_error"] >= 0.99 * total, r
    sealed = r["resealed_codec_fuzz"]
    assert not [k for k in sealed if k.startswith(("untyped", "MemoryError"))], sealed


def test_file_header_length_is_bounded_by_the_file(tmp_path: Path) -> None:
    """Regression: a damaged file header claiming a 4 GiB header made list() and
    read_prefix() ask ``os.pread`` for 4 GiB (found by the campaign as a MemoryError
    under RLIMIT_AS). No read may ask for more than the file holds."""
    sizes: list[int] = []

    class RecordingIO(FileIO):
        def pread(self, fd: int, size: int, offset: int) -> bytes:
            sizes.append(size)
            return super().pread(fd, size, offset)

    key = CheckpointKey("p")
    with FileStorage(tmp_path.as_uri(), io=RecordingIO()) as storage:
        storage.put(key, b"x" * 1000)
        path = tmp_path / checkpoint_filename(key)
        raw = bytearray(path.read_bytes())
        raw[8:12] = (0xFFFFFFF0).to_bytes(4, "big")  # header length, u32 after the magic
        path.write_bytes(bytes(raw))
        for call in (lambda: storage.read_prefix(key, 10), lambda: storage.get(key)):
            with pytest.raises(CorruptCheckpointError):
                call()
        assert storage.list() == []  # listing skips the damaged file, reading nothing huge
    assert max(sizes) <= len(raw)
