"""Sphinx helpers for loopaware_persist's docs (local, no network).

* ``.. error-tree::`` draws the exception tree from the classes themselves, so the page
  cannot drift from ``loopaware_persist/_errors.py``.
* ``:src:`loopaware_persist._loop``` names a module of the package (a file or a package)
  and warns (an error under ``-W``) when it does not exist, so the layer table follows
  renames.
* References to a public object by one of its other names (a private module's path in a
  type annotation, ``codecs.get_codec`` for ``loopaware_persist.get_codec``, a short
  name used in another module's docstring) resolve to where it is documented.
* Every name in the ``__all__`` of a public module must be documented, once.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
from typing import Any

from docutils import nodes
from docutils.parsers.rst import directives
from sphinx.addnodes import pending_xref
from sphinx.application import Sphinx
from sphinx.environment import BuildEnvironment
from sphinx.util import logging
from sphinx.util.docutils import SphinxDirective

import loopaware_persist

logger = logging.getLogger(__name__)

# The modules whose __all__ is the public API; each of their names is documented once.
PUBLIC_MODULES = (
    "loopaware_persist",
    "loopaware_persist.codecs",
    "loopaware_persist.storage",
    "loopaware_persist.testing",
    "loopaware_persist.aiida",
)


def _lookup(path: str) -> Any:
    """The object a dotted path names, importing modules as needed; ``None`` if none."""
    parts = path.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            obj: Any = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        try:
            for name in parts[cut:]:
                obj = getattr(obj, name)
        except AttributeError:
            return None
        return obj
    return None


def _documented(env: BuildEnvironment) -> dict[str, Any]:
    return env.domaindata["py"]["objects"]  # type: ignore[no-any-return]


_CANONICAL: dict[int, str] = {}


def _canonical(env: BuildEnvironment) -> dict[int, str]:
    """id(object) -> the name it is documented under (built once per process: ids are
    not kept in the pickled environment)."""
    cache = _CANONICAL
    if not cache:
        for name, entry in _documented(env).items():
            if entry.objtype == "module" or getattr(entry, "aliased", False):
                continue
            obj = _lookup(name)
            # Classes and functions only: a data value's id may be shared (an interned
            # string, a typing alias of a standard type).
            if inspect.isclass(obj) or inspect.isroutine(obj):
                cache.setdefault(id(obj), name)
    return cache


def _resolve_alias(
    app: Sphinx, env: BuildEnvironment, node: pending_xref, contnode: nodes.Element
) -> nodes.Element | None:
    if node.get("refdomain") != "py":
        return None
    target: str = node["reftarget"]
    module = node.get("py:module")
    candidates = [target]
    if module:
        candidates.insert(0, f"{module}.{target}")
    name = None
    canonical = _canonical(env)
    for candidate in candidates:
        obj = _lookup(candidate)
        if obj is not None and id(obj) in canonical:
            name = canonical[id(obj)]
            break
    if name is None and "." not in target:
        # A short name used in another module's docstring: resolve it if one
        # documented object has that name.
        matches = [full for full in _documented(env) if full.rsplit(".", 1)[-1] == target]
        if len(matches) == 1:
            name = matches[0]
    if name is None:
        return None
    domain = env.get_domain("py")
    return domain.resolve_xref(
        env, node["refdoc"], app.builder, node["reftype"], name, node, contnode
    )


def _first_line(cls: type) -> str:
    doc = inspect.getdoc(cls) or ""
    return doc.split("\n\n", 1)[0].replace("\n", " ")


class ErrorTree(SphinxDirective):
    """The public exception classes as a nested list, rooted at the given classes."""

    required_arguments = 1
    final_argument_whitespace = True
    option_spec = {"module": directives.unchanged}

    def run(self) -> list[nodes.Node]:
        module = importlib.import_module(self.options.get("module", "loopaware_persist"))
        public = [getattr(module, name) for name in module.__all__]
        classes = [obj for obj in public if isinstance(obj, type)]
        roots = [getattr(module, name) for name in self.arguments[0].split()]
        return [self._list(roots, classes)]

    def _item(self, cls: type, classes: list[type]) -> nodes.list_item:
        text = f":class:`~loopaware_persist.{cls.__name__}`"
        builtin = [b.__name__ for b in cls.__bases__ if b.__module__ == "builtins"]
        also = [
            b.__name__ for b in cls.__bases__[1:] if b in classes and b.__module__ != "builtins"
        ]
        if builtin:
            text += f" ({', '.join(builtin)})"
        if also:
            text += f" (also a {', '.join(f':class:`{n}`' for n in also)})"
        text += f" -- {_first_line(cls)}"
        item = nodes.list_item()
        item += self.parse_text_to_nodes(text)
        children = [c for c in classes if c.__bases__[0] is cls]
        if children:
            item += self._list(children, classes)
        return item

    def _list(self, roots: list[type], classes: list[type]) -> nodes.bullet_list:
        bullets = nodes.bullet_list()
        for cls in roots:
            bullets += self._item(cls, classes)
        return bullets


def _src_role(
    name: str,
    rawtext: str,
    text: str,
    lineno: int,
    inliner: Any,
    options: dict[str, Any] | None = None,
    content: list[str] | None = None,
) -> tuple[list[nodes.Node], list[nodes.system_message]]:
    try:
        found = importlib.util.find_spec(text) is not None
    except ModuleNotFoundError:  # a parent package is missing
        found = False
    if not found:
        msg = inliner.reporter.warning(
            f"no module {text} in the package: update the page", line=lineno
        )
        return [nodes.literal(rawtext, text)], [msg]
    return [nodes.literal(rawtext, text)], []


def _check_all_documented(app: Sphinx, env: BuildEnvironment) -> None:
    documented = _documented(env)
    canonical = _canonical(env)
    for modname in PUBLIC_MODULES:
        module = importlib.import_module(modname)
        for name in module.__all__:
            full = f"{modname}.{name}"
            obj = getattr(module, name)
            if full in documented:
                continue
            if (inspect.isclass(obj) or inspect.isroutine(obj)) and id(obj) in canonical:
                continue  # documented under another public name (a re-export)
            logger.warning("%s is in %s.__all__ but not documented", full, modname)


def _public_bases(app: Sphinx, name: str, obj: object, options: object, bases: list[type]) -> None:
    """Show a class's public bases only: a private base (``_Encoding``, the encoding half
    of ``LoopAwarePersister``) is an implementation detail; its members are documented
    on the public class with ``:inherited-members:``."""
    bases[:] = [base for base in bases if not base.__name__.startswith("_")]


def setup(app: Sphinx) -> dict[str, Any]:
    app.add_directive("error-tree", ErrorTree)
    app.add_role("src", _src_role)
    app.connect("missing-reference", _resolve_alias)
    app.connect("autodoc-process-bases", _public_bases)
    app.connect("env-check-consistency", _check_all_documented)
    return {"version": loopaware_persist.__version__, "parallel_read_safe": True}
