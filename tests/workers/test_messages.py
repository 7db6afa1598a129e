"""The safe kiwipy message codec: round trips, and hostile messages refused with nothing run."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import kiwipy
import msgpack
import pytest
import yaml
from kiwipy.rmq import defaults as kiwipy_defaults
from kiwipy.rmq.utils import response_to_future

from loopaware_persist import (
    CorruptCheckpointError,
    DecodeError,
    EncodeError,
    ForeignException,
    UnsafeCheckpointError,
)
from loopaware_persist._messages import (
    MESSAGE_MAGIC,
    MessageCodec,
    RefusedMessage,
    decode_message,
    encode_message,
)
from tests.processes import CustomError

TASK = {
    "task": "launch",
    "args": {
        "process_class": "tests.processes:Finisher",
        "persist": True,
        "nowait": False,
        "init_args": (),
        "init_kwargs": {"inputs": {"x": 3, "pair": (1, 2)}, "pid": str(uuid.uuid4())},
    },
}


def tagged(tag: str, *fields: object) -> msgpack.ExtType:
    """:return: a value as the msgpack codec writes it (ext code 2: ``[tag, *fields]``)"""
    return msgpack.ExtType(2, msgpack.packb([tag, *fields], use_bin_type=True))


def _hostile(marker: Path) -> list[bytes]:
    """Messages that would run ``touch marker`` if a decoder revived what they name."""
    command = f"touch {marker}"
    ext = msgpack.ExtType
    return [
        # kiwipy's default wire format, which AiiDA decodes with yaml's unsafe Loader.
        f'!!python/object/apply:os.system ["{command}"]'.encode(),
        yaml.dump((TASK, False), encoding="utf-8"),
        # Our format, naming callables and classes outside the allow-list.
        MESSAGE_MAGIC + msgpack.packb(tagged("class", "os:system")),
        MESSAGE_MAGIC + msgpack.packb(tagged("object", "subprocess:Popen", {"args": command})),
        MESSAGE_MAGIC + msgpack.packb(tagged("exception", "os:system", [command])),
        MESSAGE_MAGIC + msgpack.packb(tagged("enum", "os:system", command)),
        # The list-headed layout of pre-release builds.
        MESSAGE_MAGIC + msgpack.packb([ext(1, b"class"), "os:system"]),
        # Not msgpack at all, and an unknown ext type.
        MESSAGE_MAGIC + b"\xc1\xc1\xc1",
        MESSAGE_MAGIC + msgpack.packb(ext(9, b"os:system")),
    ]


@pytest.mark.parametrize(
    "message",
    [
        (TASK, False),
        (TASK, True),
        {"result": {"doubled": 4, "echo": {"tags": ("a", "b")}}, "host": {"pid": 1}},
        {"exception": "boom"},
        {"pending": None},
        {"cancelled": None},
        {"body": {"intent": "kill", "message": None}, "sender": uuid.uuid4(), "subject": "x"},
    ],
)
def test_round_trip(message: object) -> None:
    codec = MessageCodec()
    data = codec.encode(message)
    assert data.startswith(MESSAGE_MAGIC)
    assert codec.decode(data) == message
    assert decode_message(encode_message(message)) == message


def test_allowed_classes_travel_and_others_do_not() -> None:
    error = CustomError("bad", 3)
    allowed = MessageCodec(allow=["tests.processes"])
    back = allowed.decode(allowed.encode({"result": error}))["result"]
    assert type(back) is CustomError
    assert back.args == error.args
    # Without the allow-list an exception arrives as a ForeignException (its class
    # name and message as text), and a class is refused outright.
    foreign = MessageCodec().decode(allowed.encode({"result": error}))["result"]
    assert type(foreign) is ForeignException
    assert "tests.processes:CustomError" in str(foreign.args)
    with pytest.raises(UnsafeCheckpointError, match=r"tests\.processes"):
        MessageCodec().decode(allowed.encode({"cls": CustomError}))
    assert type(decode_message(allowed.encode(error), allow=["tests.processes"])) is CustomError


def test_unencodable_message_names_the_path() -> None:
    with pytest.raises(EncodeError, match="Send plain data") as info:
        MessageCodec().encode({"result": {"handle": object()}})
    assert "handle" in str(info.value)


@pytest.mark.parametrize("index", range(8))
def test_hostile_message_is_refused_and_nothing_runs(tmp_path: Path, index: int) -> None:
    marker = tmp_path / "marker"
    data = _hostile(marker)[index]
    codec = MessageCodec(allow=["tests.processes"])
    with pytest.raises(DecodeError):
        codec.decode(data)
    refused = codec.worker_decoder(data)
    assert isinstance(refused, RefusedMessage)
    assert refused.size == len(data)
    reply = codec.client_decoder(data)
    assert reply["exception"].startswith("The reply was refused")
    assert not marker.exists()


def test_yaml_is_refused_with_a_message_saying_why() -> None:
    with pytest.raises(CorruptCheckpointError, match="kiwipy's default YAML"):
        decode_message(kiwipy_defaults.ENCODER((TASK, False)))


def test_refused_task_unpacks_as_kiwipy_task_info() -> None:
    # kiwipy.rmq.tasks.RmqIncomingTask does TaskInfo(*decoded).
    refused = MessageCodec().worker_decoder(b"not ours")
    body, no_reply = refused
    assert body is refused
    assert no_reply is True


def test_refused_reply_fails_the_senders_future() -> None:
    # What kiwipy's RmqCommunicator._on_response does with a decoded reply.
    loop = asyncio.new_event_loop()
    try:
        future = loop.create_future()
        response_to_future(MessageCodec().client_decoder(b"not ours"), future)
        with pytest.raises(kiwipy.RemoteException, match="refused"):
            future.result()
    finally:
        loop.close()


def test_decode_rejects_non_bytes() -> None:
    with pytest.raises(CorruptCheckpointError, match="must be bytes"):
        MessageCodec().decode("text")  # type: ignore[arg-type]
