"""The benchmark cases: real plumpy processes, driven to a resting point, and their bundles.

* ``small``: a ``Process`` waiting for its scheduler (inputs, one output, a
  ``Wait`` with data): about 1 KB pickled.
* ``medium``: a ``WorkChain`` mid-outline whose context holds ~100 KB of
  per-iteration results. Each result is a dict of about 40 values: ints,
  floats, a bool, strings, nested dicts and lists, and two values msgpack
  cannot write natively (a ``tuple`` and a ``uuid.UUID``), as JSON-like
  workflow data mostly is.
* ``big``: the ``medium`` context at ~1 MB (the largest size whose storage
  latency is timed call by call).
* ``futures``: a ``WorkChain`` whose context holds 10,000 future snapshots
  (finished, pending, cancelled and failed).
* ``dense``: the ``medium`` context scaled to ~10 MB.
* ``floats``: ~10 MB of floats in one list.
* ``strings``: ~10 MB of short strings (a few non-ASCII).

Every context is generated from a fixed seed, so runs compare like with like.
Classes are named ``benchmarks._cases:...`` in checkpoints, which
the default allow-list refuses: every load here passes ``allow=_config.ALLOW``.
"""

from __future__ import annotations

import asyncio
import pickle
import random
import string
import uuid
from collections.abc import Callable
from typing import Any

import attrs
import plumpy
from plumpy.workchains import WorkChainSpec

from loopaware_persist import FutureSnapshot

from ._config import Config

__all__ = ("CASES", "Case", "build_cases", "build_waiting", "make_snapshots", "state_label")

#: Case names in report order, with what each stands for.
CASES: dict[str, str] = {
    "small": "a Process waiting for its scheduler",
    "medium": "a WorkChain context of per-iteration results",
    "big": "the medium context at 1 MB",
    "futures": "a WorkChain context of future snapshots",
    "dense": "the medium context, scaled up",
    "floats": "a WorkChain context holding one list of floats",
    "strings": "a WorkChain context holding one list of short strings",
}


class BenchCalc(plumpy.Process):
    """A calculation that submitted a job and waits for the scheduler (the ``small`` case)."""

    @classmethod
    def define(cls, spec: plumpy.ProcessSpec) -> None:
        """:param spec: the spec to fill"""
        super().define(spec)
        spec.input("code", valid_type=str, default="pw.x")
        spec.input("resources", valid_type=dict, required=False)
        spec.input("parameters", valid_type=dict, required=False)
        spec.outputs.dynamic = True

    def run(self) -> plumpy.Wait:  # type: ignore[override]  # plumpy allows a command
        """Submit, then wait for the scheduler."""
        self.out("submitted", True)
        return plumpy.Wait(self.retrieved, "waiting for the scheduler", data={"job_id": 4217})

    def retrieved(self, value: Any = None) -> None:
        """:param value: what the scheduler reported"""
        self.out("retrieved", value)


def _record(rng: random.Random, i: int) -> dict[str, Any]:
    f = rng.random
    return {
        "step": i,
        "energy": -1000.0 * f(),
        "converged": i % 3 == 0,
        "label": f"relax-{i:05d}",
        "forces": [[f(), f(), f()] for _ in range(4)],
        "cell": [[f() * 5, 0.0, 0.0], [0.0, f() * 5, 0.0], [0.0, 0.0, f() * 5]],
        "uuid": uuid.UUID(int=rng.getrandbits(128)),
        "parameters": {"ecutwfc": 30.0 + i % 7, "smearing": "gaussian", "kpoints": (4, 4, 4)},
        "timings": {"wall": f() * 100, "cpu": f() * 100},
    }


def _string(rng: random.Random, i: int) -> str:
    text = "".join(
        rng.choices(string.ascii_letters + string.digits + " _-", k=rng.randint(20, 120))
    )
    return text + "·Å" if i % 50 == 0 else text


def _float(rng: random.Random, _i: int) -> float:
    return rng.gauss(0.0, 1e3)


def _snapshot(rng: random.Random, i: int) -> FutureSnapshot:
    if i % 100 == 99:
        return FutureSnapshot.failed(ValueError(f"job {i} failed", i))
    if i % 20 == 1:
        return FutureSnapshot.cancelled("superseded")
    if i % 10 == 2:
        return FutureSnapshot.pending()
    return FutureSnapshot.finished(rng.random())


def _fill(make: Callable[[random.Random, int], Any], size: int, seed: int) -> list[Any]:
    """As many items as make ``size`` pickled bytes (estimated from a sample of 64)."""
    rng = random.Random(seed)  # noqa: S311 - reproducible data, not secrets
    sample = [make(rng, i) for i in range(64)]
    per_item = len(pickle.dumps(sample, protocol=5)) / len(sample)
    count = max(1, round(size / per_item))
    return sample[:count] + [make(rng, i) for i in range(len(sample), count)]


def _context(kind: str, size: int) -> dict[str, Any]:
    if kind == "records":
        return {
            "iteration": 0,
            "workflow": {"max_iterations": 50, "threshold": 1e-6, "restart": None},
            "results": _fill(_record, size, seed=1),
        }
    if kind == "futures":
        rng = random.Random(2)  # noqa: S311 - reproducible data, not secrets
        return {"jobs": [_snapshot(rng, i) for i in range(size)]}
    if kind == "floats":
        return {"trajectory": _fill(_float, size, seed=3)}
    if kind == "strings":
        return {"log": _fill(_string, size, seed=4)}
    msg = f"unknown context kind {kind!r}"
    raise ValueError(msg)


class BenchChain(plumpy.WorkChain):
    """A WorkChain whose first step fills its context; checkpointed before the second."""

    @classmethod
    def define(cls, spec: plumpy.ProcessSpec) -> None:
        """:param spec: the spec to fill"""
        super().define(spec)
        assert isinstance(spec, WorkChainSpec)
        spec.input("kind", valid_type=str, default="records")
        spec.input("size", valid_type=int, default=100_000)
        spec.outputs.dynamic = True
        spec.outline(cls.setup, cls.analyse, cls.finalise)  # type: ignore[arg-type]

    def setup(self) -> None:
        """Step 1: build the context."""
        assert self.ctx is not None
        assert self.inputs is not None
        for key, value in _context(self.inputs["kind"], self.inputs["size"]).items():
            self.ctx[key] = value

    def analyse(self) -> None:
        """Step 2 (after the checkpoint)."""
        assert self.ctx is not None
        self.ctx.iteration = 1

    def finalise(self) -> None:
        """Step 3."""
        assert self.ctx is not None
        self.out("iterations", self.ctx.iteration)


@attrs.frozen(kw_only=True)
class Case:
    """One benchmark case.

    :param name: the case's key in the results
    :param title: what it stands for
    :param process: the live process, at rest (WAITING, or RUNNING between two steps)
    :param bundle: ``plumpy.Bundle(process)``, taken once
    :param pickle_size: ``len(pickle.dumps(bundle, protocol=5))``
    :param detail: what the context holds, counted
    """

    name: str
    title: str
    process: plumpy.Process
    bundle: plumpy.Bundle
    pickle_size: int
    detail: str


async def _drive(name: str, config: Config, loop: asyncio.AbstractEventLoop) -> plumpy.Process:
    if name == "small":
        calc = BenchCalc(
            inputs={
                "code": "pw.x",
                "resources": {"num_machines": 1, "num_mpiprocs_per_machine": 16},
                "parameters": {"ecutwfc": 30.0, "kpoints": (4, 4, 4), "calculation": "relax"},
            },
            loop=loop,
        )
        while calc.state is not plumpy.ProcessState.WAITING:
            await calc.step()
        return calc
    inputs: dict[str, Any] = {
        "medium": {"kind": "records", "size": config.medium_bytes},
        "big": {"kind": "records", "size": config.big_bytes},
        "futures": {"kind": "futures", "size": config.futures},
        "dense": {"kind": "records", "size": config.large_bytes},
        "floats": {"kind": "floats", "size": config.large_bytes},
        "strings": {"kind": "strings", "size": config.large_bytes},
    }[name]
    chain = BenchChain(inputs=inputs, loop=loop)
    await chain.step()  # CREATED -> RUNNING
    await chain.step()  # setup: the context is built
    assert chain.state is plumpy.ProcessState.RUNNING
    return chain


def state_label(process: plumpy.Process) -> str:
    """:return: the process state's value (``waiting``, ``running``...)"""
    return str(getattr(process.state, "value", process.state))


def _detail(process: plumpy.Process) -> str:
    if not isinstance(process, BenchChain):
        return f"state {state_label(process)}"
    context = vars(process.ctx)
    for key, what in (
        ("results", "results"),
        ("jobs", "snapshots"),
        ("trajectory", "floats"),
        ("log", "strings"),
    ):
        if key in context:
            return f"{len(context[key]):,} {what}"
    return ""


def build_cases(
    config: Config, loop: asyncio.AbstractEventLoop, names: tuple[str, ...] = tuple(CASES)
) -> dict[str, Case]:
    """Create and drive the processes of ``names`` on ``loop`` (idle), and bundle them.

    :param config: the sizes
    :param loop: an idle loop; nothing is left running on it
    :param names: which cases to build
    :return: the cases by name, in report order
    """
    cases = {}
    for name in names:
        process = loop.run_until_complete(_drive(name, config, loop))
        bundle = plumpy.Bundle(process)
        cases[name] = Case(
            name=name,
            title=CASES[name],
            process=process,
            bundle=bundle,
            pickle_size=len(pickle.dumps(bundle, protocol=5)),
            detail=_detail(process),
        )
    return cases


def build_waiting(loop: asyncio.AbstractEventLoop, size: int) -> Case:
    """A ``small``-shaped ``Process`` WAITING for its scheduler, its ``parameters`` input
    holding ``size`` pickled bytes of per-iteration results (the ``medium`` records).

    :param loop: an idle loop; nothing is left running on it
    :param size: pickled bytes of the bundle (about: plumpy keeps the raw and the parsed
        inputs, so each holds half)
    :return: the case, named ``waiting-<size>``
    """

    async def drive() -> plumpy.Process:
        calc = BenchCalc(
            inputs={
                "code": "pw.x",
                "resources": {"num_machines": 1, "num_mpiprocs_per_machine": 16},
                "parameters": {"ecutwfc": 30.0, "results": _fill(_record, size // 2, seed=1)},
            },
            loop=loop,
        )
        while calc.state is not plumpy.ProcessState.WAITING:
            await calc.step()
        return calc

    process = loop.run_until_complete(drive())
    bundle = plumpy.Bundle(process)
    pickle_size = len(pickle.dumps(bundle, protocol=5))
    return Case(
        name=f"waiting-{size}",
        title="a Process waiting for its scheduler, with per-iteration results in its inputs",
        process=process,
        bundle=bundle,
        pickle_size=pickle_size,
        detail=f"state {state_label(process)}",
    )


def make_snapshots(count: int) -> list[FutureSnapshot]:
    """:param count: how many
    :return: ``count`` finished snapshots with float results (for the loop benchmark)
    """
    rng = random.Random(5)  # noqa: S311 - reproducible data, not secrets
    return [FutureSnapshot.finished(rng.random()) for _ in range(count)]
