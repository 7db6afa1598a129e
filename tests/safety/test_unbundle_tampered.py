"""Loading tampered bundles: each is refused, before plumpy runs anything, with a typed
error naming where the bundle is wrong -- or, for legitimate but unusual content (YAML
aliases, a custom object loader), loads as plumpy would."""

from __future__ import annotations

import asyncio
import copy
from collections.abc import Iterator
from typing import Any

import kiwipy
import plumpy
import pytest
from plumpy import loaders
from plumpy.persistence import META, META__CLASS_NAME, META__TYPES

from loopaware_persist import (
    CorruptCheckpointError,
    LoopAwareBundle,
    LoopAwarePersister,
    UnsafeCheckpointError,
    open_persister,
)
from tests.loops import LoopPair
from tests.processes import drive

ALLOW = ["tests.processes"]


@pytest.fixture
def persister() -> Iterator[LoopAwarePersister]:
    with open_persister("memory://", allow=ALLOW) as opened:
        yield opened


def _load_tampered(
    persister: LoopAwarePersister, bundle: dict[str, Any], loop: asyncio.AbstractEventLoop
) -> plumpy.Process:
    """:return: ``bundle`` loaded onto ``loop`` as an untrusted bundle of ``persister``'s"""
    wrapped = LoopAwareBundle.wrap(bundle, registry=persister.registry, trusted=False)
    return wrapped.unbundle(plumpy.LoadSaveContext(loop=loop))


def _saved(
    persister: LoopAwarePersister, kind: str, loop: asyncio.AbstractEventLoop
) -> dict[str, Any]:
    persister.save_checkpoint(drive(kind, loop, pid=kind))
    return copy.deepcopy(dict(persister.load_checkpoint(kind)))


@pytest.mark.parametrize(
    ("ex_value", "error"),
    [
        (42, "Excepted state at .* stores int, not YAML text"),
        ("key: [unclosed", "Excepted state at .* holds unreadable YAML"),
    ],
)
def test_damaged_excepted_yaml_is_corrupt(
    persister: LoopAwarePersister, loops: LoopPair, ex_value: Any, error: str
) -> None:
    a, b = loops
    bundle = _saved(persister, "excepted", a)
    bundle["_state"]["ex_value"] = ex_value
    with pytest.raises(CorruptCheckpointError, match=error):
        _load_tampered(persister, bundle, b)


def test_excepted_yaml_with_aliases_is_audited_once_and_loads(
    persister: LoopAwarePersister, loops: LoopPair
) -> None:
    a, b = loops
    bundle = _saved(persister, "excepted", a)
    bundle["_state"]["ex_value"] = "!!python/object/apply:builtins.ValueError [&x boom, *x, *x]"
    restored = _load_tampered(persister, bundle, b)
    assert restored.state is plumpy.ProcessState.EXCEPTED
    assert restored.exception().args == ("boom", "boom", "boom")


def test_meta_that_is_not_a_mapping_is_corrupt(
    persister: LoopAwarePersister, loops: LoopPair
) -> None:
    a, b = loops
    bundle = _saved(persister, "waiting", a)
    bundle["_state"][META] = ["plumpy.process_states:Waiting"]
    with pytest.raises(CorruptCheckpointError, match=r"'!!meta' at .* is list, not a mapping"):
        _load_tampered(persister, bundle, b)


@pytest.mark.parametrize("method", ["os.system", "__init_subclass__", "no_such_method", 3])
def test_a_stored_bound_method_must_name_a_plain_method(
    persister: LoopAwarePersister, loops: LoopPair, method: Any
) -> None:
    """plumpy stores bound methods by name (type ``m``) and getattr()s them on load."""
    a, b = loops
    bundle = _saved(persister, "waiting", a)
    bundle[META][META__TYPES]["_callback"] = "m"
    bundle["_callback"] = method
    with pytest.raises(
        UnsafeCheckpointError,
        match=r"Method name at <root>\['_callback'\] is .*, not a plain method name of Waiter",
    ):
        _load_tampered(persister, bundle, b)


@pytest.mark.parametrize("method", ["kill", "on_finish", "pause", "result", "recreate_from"])
def test_a_stored_step_may_not_name_the_engines_api(
    persister: LoopAwarePersister, loops: LoopPair, method: str
) -> None:
    """plumpy calls the step a Waiting state stores with the value it is resumed with: a
    method of plumpy's ``Process`` (public or not, a classmethod too) is no step."""
    a, b = loops
    bundle = _saved(persister, "waiting", a)
    assert bundle["_state"]["DONE_CALLBACK"] == "resumed"
    assert callable(getattr(plumpy.Process, method))  # the control: a real engine method
    bundle["_state"]["DONE_CALLBACK"] = method
    with pytest.raises(
        UnsafeCheckpointError,
        match=rf"'{method}', a method of the engine's own Waiter API, not a step",
    ):
        _load_tampered(persister, bundle, b)


@pytest.mark.parametrize("method", ["resumed", "run"])
def test_the_users_own_methods_and_the_engines_steps_pass(
    persister: LoopAwarePersister, loops: LoopPair, method: str
) -> None:
    """``resumed`` is the user's own step; ``run`` is what plumpy's Created state stores."""
    a, b = loops
    bundle = _saved(persister, "waiting", a)
    bundle["_state"]["DONE_CALLBACK"] = method
    restored = _load_tampered(persister, bundle, b)
    assert restored._state.done_callback.__name__ == method  # type: ignore[attr-defined]
    restored.close()


def test_a_bundle_plumpy_cannot_load_is_corrupt_naming_the_class(
    persister: LoopAwarePersister, loops: LoopPair
) -> None:
    a, b = loops
    bundle = _saved(persister, "waiting", a)
    del bundle["_state"]
    with pytest.raises(
        CorruptCheckpointError, match="plumpy could not load the checkpoint"
    ) as info:
        _load_tampered(persister, bundle, b)
    assert "'tests.processes:Waiter'" in str(info.value)
    assert "does not match the code installed here" in str(info.value)


def test_a_communicator_refusing_the_process_is_not_corruption(
    persister: LoopAwarePersister,
    loops: tuple[asyncio.AbstractEventLoop, asyncio.AbstractEventLoop],
) -> None:
    """A process already subscribed under its pid (a duplicate task in the same worker) is
    kiwipy's DuplicateSubscriberIdentifier, unchanged: AiiDA's ProcessLauncher catches it
    by type to drop the duplicate task instead of marking the running process excepted."""
    a, b = loops
    persister.save_checkpoint(drive("waiting", a, pid="twice"))
    communicator = kiwipy.LocalCommunicator()
    context = plumpy.LoadSaveContext(loop=b, communicator=communicator)
    first = persister.load_checkpoint("twice").unbundle(context)
    with pytest.raises(kiwipy.DuplicateSubscriberIdentifier, match="RPC identifier 'twice'"):
        persister.load_checkpoint("twice").unbundle(context)
    assert isinstance(first, plumpy.Process)
    communicator.close()


class RecordingLoader(loaders.DefaultObjectLoader):
    """A user's own object loader: plumpy must be given it, not the default."""

    def __init__(self) -> None:
        self.loaded: list[str] = []

    def load_object(self, identifier: str) -> Any:
        self.loaded.append(identifier)
        return super().load_object(identifier)


class CustomLoader(loaders.ObjectLoader):
    def __init__(self) -> None:
        self.inner = RecordingLoader()

    def load_object(self, identifier: str) -> Any:
        return self.inner.load_object(identifier)

    def identify_object(self, obj: Any) -> str:
        return self.inner.identify_object(obj)


def test_a_custom_loader_in_the_load_context_is_used(
    persister: LoopAwarePersister, loops: LoopPair
) -> None:
    a, b = loops
    persister.save_checkpoint(drive("waiting", a, pid="w"))
    loader = CustomLoader()
    restored = persister.load_checkpoint("w").unbundle(
        plumpy.LoadSaveContext(loop=b, loader=loader)
    )
    assert restored.loop is b
    assert "tests.processes:Waiter" in loader.inner.loaded


def test_a_restored_process_saves_again_under_the_same_class_name(
    persister: LoopAwarePersister, loops: LoopPair
) -> None:
    """A process loaded safely carries the safe loader; re-saving it must name its
    class exactly as the first save did, so the next load finds it."""
    a, b = loops
    persister.save_checkpoint(drive("waiting", a, pid="w"))
    restored = persister.load_process("w", loop=b)
    persister.save_checkpoint(restored, tag="again")
    bundle = persister.load_checkpoint("w", "again")
    assert bundle[META][META__CLASS_NAME] == "tests.processes:Waiter"
    assert persister.load_process("w", "again", loop=b).state is plumpy.ProcessState.WAITING
