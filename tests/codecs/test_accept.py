"""A store decodes only the codecs its persister was opened to accept.

msgpack by default; pickle only when asked (``codec="pickle"`` or ``accept=``). A
record naming another codec is refused before its payload is read, with an
:class:`UnsafeCheckpointError` naming the checkpoint and how to open the store.
"""

from __future__ import annotations

import json
from pathlib import Path

import plumpy
import pytest
from click.testing import CliRunner

from loopaware_persist import (
    ArgumentTypeError,
    ConfigurationError,
    UnsafeCheckpointError,
    open_persister,
)
from loopaware_persist._cli import cli
from loopaware_persist._envelope import encode_envelope
from loopaware_persist.storage import CheckpointKey
from tests.loops import new_loop
from tests.processes import Finisher

ALLOW = "tests.processes"
# A pickle payload that would grow the C unpickler's memo by 512 MiB, were it read.
MEMO_BOMB = encode_envelope(b"\x80\x05]r\x00\x00\x00\x02.", codec="pickle")


def _finished() -> plumpy.Process:
    with new_loop() as loop:
        process = Finisher(loop=loop)
        loop.run_until_complete(process.step_until_terminated())
    return process


def _pickle_store(url: str) -> plumpy.Process:
    process = _finished()
    with open_persister(url, codec="pickle", allow=[ALLOW]) as writer:
        writer.save_checkpoint(process)
        writer.save_checkpoint(process, tag="t")
    return process


def test_a_default_persister_refuses_pickle_records_naming_the_checkpoint() -> None:
    per = open_persister("memory://", allow=[ALLOW])
    assert per.accept == {"msgpack"}
    per.storage.put(CheckpointKey("bomb", "t"), MEMO_BOMB)
    with pytest.raises(UnsafeCheckpointError) as info:
        per.load_checkpoint("bomb", "t")
    message = str(info.value)
    assert "'bomb' (tag 't')" in message
    assert "codec 'pickle'" in message
    assert "accept=" in message
    assert info.value.name == "pickle"
    with pytest.raises(UnsafeCheckpointError, match="This record was written with codec"):
        per.loads(MEMO_BOMB)


@pytest.mark.parametrize(
    ("options", "accepted"),
    [
        ({}, {"msgpack"}),
        ({"codec": "pickle"}, {"msgpack", "pickle"}),
        ({"accept": "pickle"}, {"msgpack", "pickle"}),
        ({"accept": ("msgpack", "pickle")}, {"msgpack", "pickle"}),
        ({"codec": "pickle", "accept": ()}, {"pickle"}),
    ],
)
def test_what_a_persister_accepts(options: dict[str, object], accepted: set[str]) -> None:
    process = _finished()
    per = open_persister("memory://", allow=[ALLOW], **options)  # type: ignore[arg-type]
    assert per.accept == accepted
    with open_persister("memory://", codec="pickle", allow=[ALLOW]) as writer:
        record = writer.dumps(plumpy.Bundle(process))
    if "pickle" in accepted:
        assert per.loads(record)["_state"] is not None
    else:
        with pytest.raises(UnsafeCheckpointError):
            per.loads(record)


@pytest.mark.parametrize("accept", [("yaml",), ("pickle-unrestricted",), "nope"])
def test_accept_names_only_installed_codecs(accept: object) -> None:
    with pytest.raises(ConfigurationError, match="accept names"):
        open_persister("memory://", accept=accept)  # type: ignore[arg-type]


def test_accept_names_must_be_strings() -> None:
    with pytest.raises(ArgumentTypeError, match=r"accept entries, got int \(3\)"):
        open_persister("memory://", accept=(3,))  # type: ignore[arg-type]


def test_the_cli_reads_and_converts_a_pickle_store(tmp_path: Path) -> None:
    src = f"sqlite:///{tmp_path}/pickles.db"
    dst = f"sqlite:///{tmp_path}/converted.db"
    process = _pickle_store(src)
    runner = CliRunner()
    verified = runner.invoke(cli, ["--store", src, "--allow", ALLOW, "verify", "--load", "--json"])
    assert verified.exit_code == 0, verified.output
    converted = runner.invoke(cli, ["--allow", ALLOW, "convert", src, dst])
    assert converted.exit_code == 0, converted.output
    with open_persister(dst, allow=[ALLOW]) as per:
        bundle = per.load_checkpoint(process.pid)
        assert per.storage.get(CheckpointKey(process.pid)).data[25:32] == b"msgpack"
        assert bundle["_state"] is not None
    shown = runner.invoke(
        cli, ["--store", src, "--allow", ALLOW, "show", str(process.pid), "--json"]
    )
    assert shown.exit_code == 0, shown.output
    assert json.loads(shown.stdout)
