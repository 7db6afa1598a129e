"""Operator operations on checkpoint stores: list, inspect, verify, convert, delete, prune.

These are the library calls behind the ``loopaware-persist`` command line; they
print nothing and know nothing of click, so they can be scripted and tested
directly. Every read goes through the persister's safe path: the envelope's
checksums are checked, the payload decoded with the allow-list, and the bundle audited as
data with :func:`audit_bundle` -- nothing a checkpoint names is imported unless
the allow-list permits it, and nothing is run. One module per operation:

- :mod:`._common`: durations, store URLs, pids as typed, one-line failure reasons, a
  throwaway loop to try a load on
- :mod:`._listing`: listing checkpoints from their headers, filtered
- :mod:`._inspect`: reading one checkpoint safely (``show``, ``verify``)
- :mod:`._render`: a bundle as a bounded tree or as JSON-ready data
- :mod:`._prune`: choosing what a prune deletes, and deleting exactly that
- :mod:`._sources`: what a convert reads, a store or a plumpy pickle directory
- :mod:`._convert`: copying a source into a store, resumably
"""

from __future__ import annotations

from .._errors import OpsError as OpsError
from ._common import (
    READ_CODECS as READ_CODECS,
    Problem as Problem,
    one_line as one_line,
    open_store as open_store,
    parse_duration as parse_duration,
    resolve_pid as resolve_pid,
    same_store as same_store,
    throwaway_loop as throwaway_loop,
)
from ._convert import (
    CONVERTED_FROM as CONVERTED_FROM,
    CONVERTED_SHA256 as CONVERTED_SHA256,
    Converter as Converter,
    ConvertResult as ConvertResult,
    Status as Status,
)
from ._inspect import Inspection as Inspection, inspect_record as inspect_record
from ._listing import list_checkpoints as list_checkpoints
from ._prune import delete_keys as delete_keys, plan_prune as plan_prune
from ._render import (
    render_tree as render_tree,
    to_jsonable as to_jsonable,
)
from ._sources import (
    PLUMPY_PICKLE_SCHEME as PLUMPY_PICKLE_SCHEME,
    PickleSource as PickleSource,
    Source as Source,
    SourceItem as SourceItem,
    StoreSource as StoreSource,
    pickle_dir_from_url as pickle_dir_from_url,
)

__all__ = (
    "CONVERTED_FROM",
    "CONVERTED_SHA256",
    "PLUMPY_PICKLE_SCHEME",
    "READ_CODECS",
    "ConvertResult",
    "Converter",
    "Inspection",
    "OpsError",
    "PickleSource",
    "Problem",
    "Source",
    "SourceItem",
    "Status",
    "StoreSource",
    "delete_keys",
    "inspect_record",
    "list_checkpoints",
    "one_line",
    "open_store",
    "parse_duration",
    "pickle_dir_from_url",
    "plan_prune",
    "render_tree",
    "resolve_pid",
    "same_store",
    "throwaway_loop",
    "to_jsonable",
)
