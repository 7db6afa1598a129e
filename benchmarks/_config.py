"""How big and how long: the ``full``, ``quick`` and ``smoke`` presets."""

from __future__ import annotations

from typing import Any

import attrs

__all__ = ("ALLOW", "Config")

#: What the benchmark's loads allow: the module of its case processes. The default
#: allow-list leaves them out, and the worker section allows its one process class by
#: name (``_workers.WORKER_ALLOW``), so that no task message can launch them on a worker
#: that was not started by the benchmark.
ALLOW: tuple[str, ...] = ("benchmarks._cases",)

KB = 1_000
MB = 1_000_000


@attrs.frozen(kw_only=True)
class Config:
    """Sizes, repetitions and what to include in one benchmark run.

    :param name: the preset's name, recorded in the results
    :param medium_bytes: pickled size of the medium WorkChain's bundle
    :param big_bytes: pickled size of the ``big`` case (the medium context at 1 MB, the
        largest size whose save latency is timed call by call on every store)
    :param futures: future snapshots in the many-futures case
    :param large_bytes: pickled size of each of the three large cases
    :param rounds: interleaved rounds per codec case and per loop measurement
    :param sample_s: wall time one codec/loop sample aims for (several calls if needed)
    :param save_count: single saves timed per storage and size (for p50/p99)
    :param load_count: single loads timed per storage and size
    :param list_counts: stored checkpoints at which ``get_checkpoints()`` is timed
    :param list_sizes: which cases fill the stores for listing (``small``, ``medium``)
    :param list_reps: listings timed per store and count (fewer if one takes long)
    :param list_budget_s: stop repeating a listing after this much time
    :param restore_count: snapshots restored per loop sample
    :param postgres: include PostgreSQL when ``LOOPAWARE_TEST_POSTGRES_URL`` is set
    :param worker_counts: how many worker processes serve the queue in each worker run
        (empty: no worker section); needs ``LOOPAWARE_TEST_AMQP_URL``
    :param worker_tasks: processes launched per worker run
    :param aiida_rounds: rounds of the ``aiida`` section (0: none); needs aiida-core
    :param load_futures: future snapshots in the ``loading`` section's futures case
    :param restart_count: WAITING processes stored, listed and loaded per restart sample
    :param restart_rounds: interleaved rounds of the restart measurement
    """

    name: str
    medium_bytes: int = 100 * KB
    big_bytes: int = 1 * MB
    futures: int = 10_000
    large_bytes: int = 10 * MB
    rounds: int = 15
    sample_s: float = 0.02
    save_count: int = 2_000
    load_count: int = 1_000
    list_counts: tuple[int, ...] = (1_000, 10_000)
    list_sizes: tuple[str, ...] = ("small", "medium")
    list_reps: int = 30
    list_budget_s: float = 6.0
    restore_count: int = 10_000
    postgres: bool = True
    worker_counts: tuple[int, ...] = (1, 2, 4)
    worker_tasks: int = 400
    aiida_rounds: int = 15
    load_futures: int = 1_000
    restart_count: int = 1_000
    restart_rounds: int = 5

    @classmethod
    def full(cls) -> Config:
        """:return: the issue's sizes; a few minutes on a quiet 2-core machine"""
        return cls(name="full")

    @classmethod
    def quick(cls) -> Config:
        """:return: the same cases, large ones at 1 MB, fewer checkpoints and rounds (CI)"""
        return cls(
            name="quick",
            large_bytes=1 * MB,
            rounds=5,
            sample_s=0.005,
            save_count=300,
            load_count=200,
            list_counts=(100, 1_000),
            list_reps=10,
            list_budget_s=1.5,
            worker_counts=(1, 2),
            worker_tasks=100,
            aiida_rounds=5,
            restart_count=200,
            restart_rounds=3,
        )

    @classmethod
    def smoke(cls) -> Config:
        """:return: tiny sizes that only check the machinery works (the test suite)"""
        return cls(
            name="smoke",
            medium_bytes=20 * KB,
            big_bytes=40 * KB,
            futures=500,
            large_bytes=64 * KB,
            rounds=2,
            sample_s=0.001,
            save_count=20,
            load_count=20,
            list_counts=(30,),
            list_reps=3,
            list_budget_s=0.5,
            restore_count=500,
            postgres=False,
            worker_counts=(),
            aiida_rounds=2,
            load_futures=100,
            restart_count=10,
            restart_rounds=2,
        )

    def evolve(self, **changes: Any) -> Config:
        """:param changes: fields to change
        :return: a copy with ``changes``
        """
        return attrs.evolve(self, **changes)

    def as_dict(self) -> dict[str, Any]:
        """:return: the configuration, JSON-ready"""
        return {
            key: list(value) if isinstance(value, tuple) else value
            for key, value in attrs.asdict(self).items()
        }
