"""AiiDA processes the tests run: importable by name, as a checkpoint names them."""

from __future__ import annotations

from typing import Any

from aiida import orm
from aiida.common import AttributeDict
from aiida.engine import ToContext, WorkChain, calcfunction, while_


class Crash(BaseException):
    """Stands for the worker dying mid-step: plumpy does not catch it, the node stays
    unsealed and its last checkpoint is what a resume starts from."""


#: ``{"at": i}``: the ``accumulate`` step of round ``i`` raises :class:`Crash`, once.
CRASH: dict[str, int | None] = {"at": None}


@calcfunction
def add(x: orm.Int, y: orm.Int) -> orm.Int:
    return orm.Int(x.value + y.value)


@calcfunction
def double(x: orm.Int) -> orm.Int:
    return orm.Int(2 * x.value)


class OneStepChain(WorkChain):
    """A WorkChain of one step, ``run_it``, from the Int input ``x`` to the Int output
    ``result``; subclasses give the step."""

    @classmethod
    def define(cls, spec: Any) -> None:
        super().define(spec)
        spec.input("x", valid_type=orm.Int)
        spec.output("result", valid_type=orm.Int)
        spec.outline(cls.run_it)

    def run_it(self) -> None:
        raise NotImplementedError


class ChildChain(OneStepChain):
    """Doubles its input."""

    def run_it(self) -> None:
        self.out("result", double(self.inputs.x))


class ParentChain(WorkChain):
    """A context holding nodes, a list of nodes, a dict, an AttributeDict and (with
    ``big``) a 1,000-item dict; calcfunctions in a while loop and a ToContext child."""

    @classmethod
    def define(cls, spec: Any) -> None:
        super().define(spec)
        spec.input("x", valid_type=orm.Int)
        spec.input("rounds", valid_type=orm.Int, default=lambda: orm.Int(2))
        spec.input("big", valid_type=orm.Bool, default=lambda: orm.Bool(False))
        spec.output("total", valid_type=orm.Int)
        spec.output("child", valid_type=orm.Int)
        spec.outline(
            cls.initialise,
            while_(cls.not_done)(cls.accumulate),
            cls.launch_child,
            cls.finalise,
        )

    def initialise(self) -> None:
        self.ctx.total = self.inputs.x
        self.ctx.history = [self.inputs.x]
        self.ctx.plain = {"a": 1, "b": [1, 2, 3], "c": "text"}
        self.ctx.attrs = AttributeDict({"k": 1, "nested": AttributeDict({"n": 2})})
        self.ctx.i = 0
        if self.inputs.big.value:
            self.ctx.table = {f"key{i}": float(i) for i in range(1000)}

    def not_done(self) -> bool:
        return bool(self.ctx.i < self.inputs.rounds.value)

    def accumulate(self) -> None:
        if CRASH["at"] == self.ctx.i:
            CRASH["at"] = None
            raise Crash
        self.ctx.total = add(self.ctx.total, orm.Int(1))
        self.ctx.history.append(self.ctx.total)
        self.ctx.i += 1

    def launch_child(self) -> Any:
        return ToContext(child=self.submit(ChildChain, x=self.ctx.total))

    def finalise(self) -> None:
        self.out("total", self.ctx.total)
        self.out("child", self.ctx.child.outputs.result)


class LinksChain(WorkChain):
    """Keeps its child's ``outputs`` and ``inputs`` (``NodeLinksManager``) in its context,
    then, in the step after, raises :class:`Crash` when ``CRASH["at"] == 0``: its last
    checkpoint holds both managers."""

    @classmethod
    def define(cls, spec: Any) -> None:
        super().define(spec)
        spec.input("x", valid_type=orm.Int)
        spec.output("result", valid_type=orm.Int)
        spec.outline(cls.launch_child, cls.keep_links, cls.finalise)

    def launch_child(self) -> Any:
        return ToContext(child=self.submit(ChildChain, x=self.inputs.x))

    def keep_links(self) -> None:
        self.ctx.res = self.ctx.child.outputs
        self.ctx.ins = self.ctx.child.inputs

    def finalise(self) -> None:
        if CRASH["at"] == 0:
            CRASH["at"] = None
            raise Crash
        self.out("result", self.ctx.res.result)


class OutputThenFail(OneStepChain):
    """Emits its output, then raises: a process in the Excepted state whose checkpoint
    holds ``OUTPUTS`` and the exception's YAML."""

    def run_it(self) -> None:
        self.out("result", double(self.inputs.x))
        raise ValueError("failed after its output")
