"""The WorkChain the ``aiida`` section checkpoints (imports aiida-core: load it only there).

Its context has the shape of the AiiDA tests' ``ParentChain``: nodes, a list of nodes,
a plain dict, nested ``AttributeDict``\\ s and, with ``big``, a 1,000-item dict. The
benchmark lets it run its first round, then stops it inside the second with
:class:`Stop` (a ``BaseException`` plumpy does not catch), so that the process object
is left mid-run, unsealed, with that context: the state both persisters save.
"""

from __future__ import annotations

from typing import Any

from aiida import orm
from aiida.common import AttributeDict
from aiida.engine import WorkChain, calcfunction, while_

__all__ = ("BenchChain", "Stop")


class Stop(BaseException):
    """Raised in the second round: leaves the process mid-run with its context."""


@calcfunction
def add(x: orm.Int, y: orm.Int) -> orm.Int:
    """:return: ``x + y``"""
    return orm.Int(x.value + y.value)  # type: ignore[no-untyped-call]  # aiida leaves it untyped


class BenchChain(WorkChain):
    """A ``while_`` loop of calcfunctions; ``big`` adds a 1,000-item dict to the context."""

    @classmethod
    def define(cls, spec: Any) -> None:
        """:param spec: the spec to fill"""
        super().define(spec)
        spec.input("x", valid_type=orm.Int)
        spec.input("big", valid_type=orm.Bool, default=lambda: orm.Bool(False))  # type: ignore[no-untyped-call]
        spec.output("total", valid_type=orm.Int)
        # while_ is annotated for methods of WorkChain itself, not of a subclass
        loop = while_(cls.not_done)(cls.accumulate)  # type: ignore[arg-type]
        spec.outline(cls.initialise, loop, cls.finalise)

    def initialise(self) -> None:
        """Fill the context."""
        self.ctx.total = self.inputs.x
        self.ctx.history = [self.inputs.x]
        self.ctx.plain = {"a": 1, "b": [1, 2, 3], "c": "text"}
        self.ctx.attrs = AttributeDict({"k": 1, "nested": AttributeDict({"n": 2})})
        self.ctx.i = 0
        if self.inputs.big.value:
            self.ctx.table = {f"key{i}": float(i) for i in range(1000)}

    def not_done(self) -> bool:
        """:return: whether to run another round"""
        return bool(self.ctx.i < 2)

    def accumulate(self) -> None:
        """One round; the second stops the process (:class:`Stop`).

        :raises Stop: in the second round
        """
        if self.ctx.i == 1:
            raise Stop
        self.ctx.total = add(self.ctx.total, orm.Int(1))  # type: ignore[no-untyped-call]
        self.ctx.history.append(self.ctx.total)
        self.ctx.i += 1

    def finalise(self) -> None:
        """Output the total."""
        self.out("total", self.ctx.total)
