"""A WorkChain waiting on a child (``ToContext``) whose worker dies mid-child."""

from __future__ import annotations

from typing import Any

from aiida import orm
from aiida.common import AttributeDict
from aiida.engine import ToContext, WorkChain, calcfunction

from tests.aiida.workchains import Crash, OneStepChain

#: ``True``: the child's step raises :class:`Crash` (once), and records it in ``"crashed"``.
CHILD: dict[str, bool] = {"crash": False, "crashed": False}


@calcfunction
def triple(x: orm.Int) -> orm.Int:
    return orm.Int(3 * x.value)


class CrashingChild(OneStepChain):
    """Triples its input; its step can "crash" the worker."""

    def run_it(self) -> None:
        if CHILD["crash"]:
            CHILD["crash"], CHILD["crashed"] = False, True
            raise Crash
        self.out("result", triple(self.inputs.x))


class WaitingParent(WorkChain):
    """Waits for a CrashingChild, an AttributeDict and a node in its context."""

    @classmethod
    def define(cls, spec: Any) -> None:
        super().define(spec)
        spec.input("x", valid_type=orm.Int)
        spec.output("child", valid_type=orm.Int)
        spec.outline(cls.launch, cls.finalise)

    def launch(self) -> Any:
        self.ctx.attrs = AttributeDict({"x": self.inputs.x, "tags": ["a", "b"]})
        return ToContext(child=self.submit(CrashingChild, x=self.inputs.x))

    def finalise(self) -> None:
        assert self.ctx.attrs.x.pk == self.inputs.x.pk
        self.out("child", self.ctx.child.outputs.result)
