"""plumpy's process task bodies: the one reader and the one writer of that wire shape.

plumpy's ``create_launch_body``, ``create_continue_body`` and ``create_create_body``
(``plumpy/process_comms.py``, 0.26.1) build ``{'task': kind, 'args': {...}}`` with
these keys per kind:

* ``launch``: ``process_class``, ``persist``, ``nowait``, ``init_args``, ``init_kwargs``
* ``continue``: ``pid``, ``nowait``, ``tag``
* ``create``: ``process_class``, ``persist``, ``init_args``, ``init_kwargs``

:meth:`ProcessTask.parse` checks a body's shape (never resolves ``process_class``:
that is the launcher's allow-list's job) and :meth:`ProcessTask.to_dict` builds one,
so the launcher, the worker and the client agree on it by construction.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import attrs
import kiwipy
from plumpy.process_comms import (
    ARGS_KEY,
    CONTINUE_TASK,
    CREATE_TASK,
    KWARGS_KEY,
    LAUNCH_TASK,
    NOWAIT_KEY,
    PERSIST_KEY,
    PID_KEY,
    PROCESS_CLASS_KEY,
    TAG_KEY,
    TASK_ARGS,
    TASK_KEY,
)

from ._errors import ArgumentTypeError

__all__ = ("ProcessTask",)

_TASK_KEYS: Mapping[str, tuple[str, ...]] = {
    LAUNCH_TASK: (PROCESS_CLASS_KEY, PERSIST_KEY, NOWAIT_KEY, ARGS_KEY, KWARGS_KEY),
    CONTINUE_TASK: (PID_KEY, NOWAIT_KEY, TAG_KEY),
    CREATE_TASK: (PROCESS_CLASS_KEY, PERSIST_KEY, ARGS_KEY, KWARGS_KEY),
}
_REQUIRED: Mapping[str, str] = {
    LAUNCH_TASK: PROCESS_CLASS_KEY,
    CONTINUE_TASK: PID_KEY,
    CREATE_TASK: PROCESS_CLASS_KEY,
}


def _malformed(msg: str) -> ArgumentTypeError:
    return ArgumentTypeError(msg, argument="task")


def _flag(args: Mapping[str, Any], key: str, kind: str) -> bool:
    value = args.get(key, False)
    if not isinstance(value, bool):
        msg = f"The {kind!r} task's {key!r} must be True or False, got {value!r}."
        raise _malformed(msg)
    return value


@attrs.frozen(kw_only=True)
class ProcessTask:
    """One plumpy process task body, its shape checked.

    :ivar kind: ``'launch'``, ``'continue'`` or ``'create'``
    :ivar process_class: the ``module:QualName`` to launch or create (not resolved)
    :ivar init_args: positional arguments of its constructor
    :ivar init_kwargs: keyword arguments of its constructor (a launch's ``pid`` among them)
    :ivar persist: checkpoint it before it runs
    :ivar nowait: reply with the pid at once instead of the outcome
    :ivar pid: the process to continue
    :ivar tag: the checkpoint tag to continue from
    """

    kind: str
    process_class: str | None = None
    init_args: tuple[Any, ...] = ()
    init_kwargs: Mapping[str, Any] = attrs.field(factory=dict)
    persist: bool = False
    nowait: bool = False
    pid: Hashable = None
    tag: str | None = None

    @classmethod
    def parse(cls, task: object) -> ProcessTask:
        """Read a task body as kiwipy delivers it.

        :param task: ``{'task': kind, 'args': {...}}``
        :raises kiwipy.TaskRejected: if it is not a plumpy process task (another
            subscriber may take it)
        :raises ArgumentTypeError: if it is one, but malformed: a missing or unknown key,
            or a value of the wrong type
        :return: the task
        """
        kind = task.get(TASK_KEY) if isinstance(task, Mapping) else None
        if not isinstance(kind, str) or kind not in _TASK_KEYS:
            msg = (
                f"Not a plumpy process task: expected {TASK_KEY!r} to be one of "
                f"{sorted(_TASK_KEYS)}, got {kind!r}. Left for another subscriber."
            )
            raise kiwipy.TaskRejected(msg)
        assert isinstance(task, Mapping)
        args = task.get(TASK_ARGS, {})
        if not isinstance(args, Mapping):
            msg = f"The {kind!r} task's {TASK_ARGS!r} must be a mapping, got {args!r}."
            raise _malformed(msg)
        unknown = set(args) - set(_TASK_KEYS[kind])
        if unknown or _REQUIRED[kind] not in args:
            msg = (
                f"Malformed {kind!r} task: it needs {_REQUIRED[kind]!r} and accepts only "
                f"{sorted(_TASK_KEYS[kind])}; got {sorted(args)}."
            )
            raise _malformed(msg)
        if kind == CONTINUE_TASK:
            tag = args.get(TAG_KEY)
            if tag is not None and not isinstance(tag, str):
                msg = f"The 'continue' task's {TAG_KEY!r} must be a string or None, got {tag!r}."
                raise _malformed(msg)
            return cls(kind=kind, pid=args[PID_KEY], tag=tag, nowait=_flag(args, NOWAIT_KEY, kind))
        init_args = args.get(ARGS_KEY) or ()
        init_kwargs = args.get(KWARGS_KEY) or {}
        if not isinstance(init_args, Sequence) or isinstance(init_args, (str, bytes)):
            msg = f"The {kind!r} task's {ARGS_KEY!r} must be a list, got {init_args!r}."
            raise _malformed(msg)
        if not isinstance(init_kwargs, Mapping):
            msg = f"The {kind!r} task's {KWARGS_KEY!r} must be a mapping, got {init_kwargs!r}."
            raise _malformed(msg)
        name = args[PROCESS_CLASS_KEY]
        if not isinstance(name, str):
            msg = (
                f"The {kind!r} task's {PROCESS_CLASS_KEY!r} must be a 'module:QualName' "
                f"string, got {name!r}."
            )
            raise _malformed(msg)
        return cls(
            kind=kind,
            process_class=name,
            init_args=tuple(init_args),
            init_kwargs=dict(init_kwargs),
            persist=_flag(args, PERSIST_KEY, kind),
            nowait=_flag(args, NOWAIT_KEY, kind),
        )

    def to_dict(self) -> dict[str, Any]:
        """:return: the body plumpy's ``create_*_body`` would build for this task"""
        values = {
            PROCESS_CLASS_KEY: self.process_class,
            PERSIST_KEY: self.persist,
            NOWAIT_KEY: self.nowait,
            ARGS_KEY: self.init_args,
            KWARGS_KEY: dict(self.init_kwargs),
            PID_KEY: self.pid,
            TAG_KEY: self.tag,
        }
        return {TASK_KEY: self.kind, TASK_ARGS: {key: values[key] for key in _TASK_KEYS[self.kind]}}

    @property
    def process_pid(self) -> Hashable:
        """:return: the pid the process will have: a continue's ``pid``, a launch's or
        create's ``init_kwargs['pid']``, or ``None`` if the process chooses its own"""
        if self.kind == CONTINUE_TASK:
            return self.pid
        return self.init_kwargs.get("pid")

    @property
    def waited_pid(self) -> Hashable:
        """:return: the pid of a launch or continue whose reply is the process's outcome,
        or ``None`` (a create, a ``nowait`` task, no pid, or a pid that is not hashable)"""
        if self.kind == CREATE_TASK or self.nowait:
            return None
        pid = self.process_pid
        try:
            hash(pid)
        except TypeError:
            return None  # the launcher says what is wrong with it
        return pid
