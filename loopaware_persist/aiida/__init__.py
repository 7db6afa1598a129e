"""AiiDA integration: safe, loop-aware checkpoints for aiida-core 2.9 processes.

Needs the ``aiida`` extra (``pip install 'loopaware-persist[aiida]'``); importing
``loopaware_persist`` alone never imports AiiDA.

.. code-block:: python

    import aiida
    from loopaware_persist.aiida import install

    aiida.load_profile()
    install(allow=["my_plugin"])   # records in each ProcessNode (aiida://)
    # or: install(store="sqlite:////var/lib/aiida/checkpoints.db", allow=[...])
"""

try:
    import aiida as _aiida  # noqa: F401
except ImportError as _error:  # pragma: no cover - depends on the environment
    _msg = (
        "loopaware_persist.aiida needs aiida-core: pip install 'loopaware-persist[aiida]' "
        f"({_error})."
    )
    raise ImportError(_msg) from _error

from ._circus import start_daemon as start_daemon
from ._daemon import run_daemon_worker as run_daemon_worker
from ._install import (
    install as install,
    installed as installed,
    make_persister as make_persister,
    uninstall as uninstall,
)
from ._migrate import (
    BACKUP_EXTRA as BACKUP_EXTRA,
    MigrationResult as MigrationResult,
    migrate as migrate,
    prune_backups as prune_backups,
)
from ._registry import (
    AIIDA_ALLOW as AIIDA_ALLOW,
    AIIDA_PROCESSES as AIIDA_PROCESSES,
    AIIDA_YAML_TAGS as AIIDA_YAML_TAGS,
    configure_registry as configure_registry,
    make_registry as make_registry,
)
from ._storage import (
    AiidaNodeStorage as AiidaNodeStorage,
    ProfileKeyed as ProfileKeyed,
    open_storage as open_storage,
)

__all__ = (
    "AIIDA_ALLOW",
    "AIIDA_PROCESSES",
    "AIIDA_YAML_TAGS",
    "BACKUP_EXTRA",
    "AiidaNodeStorage",
    "MigrationResult",
    "ProfileKeyed",
    "configure_registry",
    "install",
    "installed",
    "make_persister",
    "make_registry",
    "migrate",
    "open_storage",
    "prune_backups",
    "run_daemon_worker",
    "start_daemon",
    "uninstall",
)

for _name in __all__:
    _obj = globals()[_name]
    if isinstance(_obj, type):
        _obj.__module__ = "loopaware_persist.aiida"
del _name, _obj
