"""An excepted process's exception, stored so that plumpy's load can build it again.

plumpy's ``Excepted`` state stores its exception as ``yaml.dump(exception)``, which
writes, as pickle's reduce does, ``!!python/object/apply:module.Class [args]``: a load
calls ``Class(*args)``. An exception of the user's whose ``__init__`` takes other
arguments than it passes on to ``Exception.__init__`` (``JobFailed(job, code)``) fails
there (the reduce of exceptions, CPython gh-76877), with plumpy's ``PicklePersister``
too: the checkpoint was saved and never loads. For a class outside ``builtins`` the save
writes ``!!python/object/new:module.Class`` instead: a load makes it with
``Class.__new__(Class, *args)`` and sets its attributes back (``__dict__``, and what a
builtin base's ``__init__`` had set: ``OSError.errno``...), running no ``__init__`` of
the user's, as the codecs do. plumpy's own load reads it (its loader knows the tag); so
does the load audit, which checks the class against the allow-list as before.
"""

from __future__ import annotations

from typing import Any

import plumpy
import yaml

from ._named_hooks import set_by_init

__all__ = ("store_exception_faithfully",)

_EXC_VALUE = plumpy.process_states.Excepted.EXC_VALUE
_NEW = "tag:yaml.org,2002:python/object/new:"


class _Dumper(yaml.Dumper):
    """plumpy's ``yaml.dump`` (the default ``Dumper``), but for exceptions of the user's."""


def _represent_exception(dumper: yaml.Dumper, exception: BaseException) -> Any:
    cls = type(exception)
    if cls.__module__ == "builtins":
        return dumper.represent_object(exception)
    state = {**vars(exception), **set_by_init(exception)}
    return dumper.represent_mapping(
        f"{_NEW}{cls.__module__}.{cls.__name__}", {"args": list(exception.args), "state": state}
    )


_Dumper.add_multi_representer(BaseException, _represent_exception)


def store_exception_faithfully(bundle: dict[str, Any], process: plumpy.Process) -> None:
    """Write the exception of ``process``, if it is excepted, so that a load rebuilds it
    without its ``__init__`` (in ``bundle``, a fresh ``plumpy.Bundle`` of ``process``).

    :param bundle: the bundle of ``process``
    :param process: the process
    """
    state = process._state  # plumpy has no public accessor for the state object
    if not isinstance(state, plumpy.process_states.Excepted):
        return
    if type(state.exception).__module__ == "builtins":
        return  # a builtin's __init__ takes what args holds: plumpy's YAML loads
    saved = bundle.get("_state")
    if isinstance(saved, dict) and isinstance(saved.get(_EXC_VALUE), str):
        # In the order they were set (plumpy's yaml.dump sorts the keys of every mapping).
        saved[_EXC_VALUE] = yaml.dump(state.exception, Dumper=_Dumper, sort_keys=False)
