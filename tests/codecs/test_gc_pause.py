"""The msgpack codec pauses the cyclic GC around a decode of 16 KiB to 64 MiB, and
leaves it as it found it: on if it was on, off if it was off, whatever the threads."""

from __future__ import annotations

import gc
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from loopaware_persist import CorruptCheckpointError, HookRegistry, default_registry
from loopaware_persist.codecs import _gc_pause
from loopaware_persist.codecs.msgpack import MsgpackCodec


class Probe:
    """A value whose decode hook notes whether the collector is on."""


SEEN: list[bool] = []


def _decode_probe(fields: list[Any]) -> Probe:
    SEEN.append(gc.isenabled())
    return Probe()


@pytest.fixture
def codec(msgpack_decoder: str) -> Iterator[MsgpackCodec]:
    registry: HookRegistry = default_registry.copy()
    registry.register(Probe, tag="tests.probe", encode=lambda value: [], decode=_decode_probe)
    SEEN.clear()
    was = gc.isenabled()
    gc.enable()
    try:
        yield MsgpackCodec(registry=registry, decoder=msgpack_decoder)
    finally:
        if not was:
            gc.disable()


def _payload(codec: MsgpackCodec, size: int) -> bytes:
    return codec.encode({"pad": "x" * size, "probe": Probe()})


def test_the_collector_is_off_during_a_decode_and_on_after(codec: MsgpackCodec) -> None:
    codec.decode(_payload(codec, _gc_pause.MIN_BYTES))
    assert SEEN == [False]
    assert gc.isenabled()


def test_a_small_decode_leaves_the_collector_alone(codec: MsgpackCodec) -> None:
    codec.decode(_payload(codec, 100))
    assert SEEN == [True]


def test_a_process_running_without_the_collector_keeps_it_off(codec: MsgpackCodec) -> None:
    gc.disable()
    codec.decode(_payload(codec, _gc_pause.MIN_BYTES))
    assert SEEN == [False]
    assert not gc.isenabled()


def test_a_failed_decode_switches_it_back_on(codec: MsgpackCodec) -> None:
    data = bytearray(_payload(codec, _gc_pause.MIN_BYTES))
    data[-1] = 0xC1  # never used in msgpack: the decode fails at the very end
    with pytest.raises(CorruptCheckpointError):
        codec.decode(bytes(data))
    assert gc.isenabled()


def test_overlapping_decodes_in_threads_leave_it_on(codec: MsgpackCodec) -> None:
    data = _payload(codec, 4 * _gc_pause.MIN_BYTES)
    barrier = threading.Barrier(4)
    errors: list[BaseException] = []

    def decode_many() -> None:
        try:
            barrier.wait()
            for _ in range(200):
                codec.decode(data)
        except BaseException as error:  # reported below
            errors.append(error)

    threads = [threading.Thread(target=decode_many) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert len(SEEN) == 800
    assert not any(SEEN)  # every decode ran with the collector off
    assert gc.isenabled()
