"""Sphinx configuration: the API reference from the package's docstrings, the guides
from README.rst. Built offline with warnings as errors (``make docs``)."""

from __future__ import annotations

import atexit
import os
import shutil
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
# The checkout's package, whatever is installed, and the local extension.
sys.path[:0] = [str(HERE.parent), str(HERE / "_ext")]

# autodoc imports loopaware_persist.aiida, and aiida-core creates its configuration
# folder (~/.aiida unless AIIDA_PATH says otherwise) when it is first imported: give
# the build a throwaway one, so building the docs leaves nothing in the user's home.
if "AIIDA_PATH" not in os.environ:
    _aiida_path = tempfile.mkdtemp(prefix="loopaware-docs-aiida-")
    os.mkdir(os.path.join(_aiida_path, ".aiida"))
    os.environ["AIIDA_PATH"] = _aiida_path
    atexit.register(shutil.rmtree, _aiida_path, ignore_errors=True)

import loopaware_persist  # noqa: E402

project = "loopaware_persist"
author = "loopaware_persist developers"
copyright = "loopaware_persist developers"
# One version source: the package.
release = loopaware_persist.__version__
version = ".".join(release.split(".")[:2])

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.viewcode",
    "lap_docs",
]

exclude_patterns = ["_build"]
html_theme = "alabaster"
html_static_path: list[str] = []

autodoc_member_order = "bysource"
autodoc_typehints = "signature"
autodoc_default_options = {"show-inheritance": True}

nitpicky = True
nitpick_ignore_regex = [
    # Offline build, no intersphinx: the standard library's and the dependencies' names
    # in signatures stay plain text.
    (
        r"py:.*",
        r"(_?asyncio|abc|collections\.abc|concurrent\.futures|enum|threading|typing|uuid)"
        r"(\..*)?",
    ),
    (r"py:.*", r"(plumpy|kiwipy|hypothesis|aiida)(\..*)?"),
    (r"py:class", r"RuleBasedStateMachine"),  # hypothesis, imported under TYPE_CHECKING
    # Type variables of generic signatures (``LoopContext.run`` -> R).
    (r"py:class", r"loopaware_persist\.[\w.]+\.[A-Z]"),
    # Private types that appear in public signatures; what they hold is documented where
    # they are used (CheckpointInfo.header, load_process's ``relink=``).
    (r"py:class", r"(loopaware_persist\._envelope\.)?Header"),
    (r"py:class", r"RelinkHook"),
]
