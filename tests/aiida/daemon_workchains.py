"""The workchain the daemon tests run: ``ParentChain`` that also returns what its
context held, so that a resumed run can be compared with an uninterrupted one."""

from __future__ import annotations

from typing import Any

from aiida import orm
from aiida.common import AttributeDict
from aiida.engine import ToContext, WorkChain, calcfunction, while_

from tests.aiida.workchains import ChildChain, ParentChain


@calcfunction
def summarise(context: orm.Dict) -> orm.Dict:
    return orm.Dict(context.get_dict())


class TracedChain(ParentChain):
    """ParentChain (nodes, a list of nodes, a dict, an AttributeDict, the 1,000-item dict,
    calcfunctions in a while loop, a ToContext child), returning its context's nodes
    (``history``) and values (``context``)."""

    @classmethod
    def define(cls, spec: Any) -> None:
        super().define(spec)
        spec.output_namespace("history", valid_type=orm.Int, dynamic=True)
        spec.output("context", valid_type=orm.Dict)

    def finalise(self) -> None:
        super().finalise()
        for i, node in enumerate(self.ctx.history):
            self.out(f"history.n{i}", node)
        attrs = self.ctx.attrs
        context = {
            "plain": self.ctx.plain,
            "attrs": {"k": attrs.k, "n": attrs.nested.n},
            "attrs_types": [type(attrs).__name__, type(attrs.nested).__name__],
            "i": self.ctx.i,
            "table": self.ctx.get("table", {}),
            "history_stored": [node.is_stored for node in self.ctx.history],
            "child_type": type(self.ctx.child).__name__,
        }
        assert isinstance(attrs, AttributeDict)
        self.out("context", summarise(orm.Dict(context)))


class SlowChain(WorkChain):
    """``n`` rounds, each waiting for a ChildChain: most of its time in WAITING, its
    worker's loop free for ``verdi process pause/play/kill`` (a step that only computes
    never yields the loop, so the worker could not answer until it returned)."""

    @classmethod
    def define(cls, spec: Any) -> None:
        super().define(spec)
        spec.input("n", valid_type=orm.Int)
        spec.output("rounds", valid_type=orm.Int)
        spec.outline(cls.begin, while_(cls.going)(cls.tick), cls.finish)

    def begin(self) -> None:
        self.ctx.i = 0

    def going(self) -> bool:
        return bool(self.ctx.i < self.inputs.n.value)

    def tick(self) -> Any:
        self.ctx.i += 1
        return ToContext(last=self.submit(ChildChain, x=orm.Int(self.ctx.i)))

    def finish(self) -> None:
        self.out("rounds", self.ctx.last.outputs.result)
