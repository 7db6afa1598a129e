"""loopaware_persist: loop-aware, safe, crash-consistent checkpoints for plumpy."""

from ._errors import (
    BackendUnavailableError as BackendUnavailableError,
)
from ._errors import (
    CheckpointNotFoundError as CheckpointNotFoundError,
)
from ._errors import (
    CorruptCheckpointError as CorruptCheckpointError,
)
from ._errors import (
    CorruptStoredRecordError as CorruptStoredRecordError,
)
from ._errors import (
    DecodeError as DecodeError,
)
from ._errors import (
    DurabilityError as DurabilityError,
)
from ._errors import (
    EncodeError as EncodeError,
)
from ._errors import (
    LoopAwarePersistError as LoopAwarePersistError,
)
from ._errors import (
    LoopBoundaryError as LoopBoundaryError,
)
from ._errors import (
    NoEventLoopError as NoEventLoopError,
)
from ._errors import (
    StaleCheckpointError as StaleCheckpointError,
)
from ._errors import (
    StorageError as StorageError,
)
from ._errors import (
    UnknownTagError as UnknownTagError,
)
from ._errors import (
    UnsafeCheckpointError as UnsafeCheckpointError,
)
from ._hooks import ForeignException as ForeignException
from ._hooks import default_registry as default_registry
from ._launcher import LoopAwareLauncher as LoopAwareLauncher
from ._launcher import LoopBridge as LoopBridge
from ._loop import LoopContext as LoopContext
from ._persister import (
    CheckpointInfo as CheckpointInfo,
)
from ._persister import (
    LoopAwarePersister as LoopAwarePersister,
)
from ._persister import (
    open_persister as open_persister,
)
from ._registry import Hook as Hook
from ._registry import HookRegistry as HookRegistry
from ._snapshot import (
    FutureSnapshot as FutureSnapshot,
)
from ._snapshot import (
    FutureStatus as FutureStatus,
)
from ._snapshot import (
    restore_future as restore_future,
)
from ._snapshot import (
    restore_futures as restore_futures,
)
from ._snapshot import (
    snapshot_future as snapshot_future,
)
from ._unbundle import (
    LoopAwareBundle as LoopAwareBundle,
)
from ._unbundle import (
    check_loop_bound as check_loop_bound,
)
from ._unbundle import (
    unbundle as unbundle,
)
from .codecs import Codec as Codec
from .codecs import get_codec as get_codec

__version__ = "0.1.0.dev0"

__all__ = (
    "BackendUnavailableError",
    "CheckpointInfo",
    "CheckpointNotFoundError",
    "Codec",
    "CorruptCheckpointError",
    "CorruptStoredRecordError",
    "DecodeError",
    "DurabilityError",
    "EncodeError",
    "ForeignException",
    "FutureSnapshot",
    "FutureStatus",
    "Hook",
    "HookRegistry",
    "LoopAwareBundle",
    "LoopAwareLauncher",
    "LoopAwarePersistError",
    "LoopAwarePersister",
    "LoopBoundaryError",
    "LoopBridge",
    "LoopContext",
    "NoEventLoopError",
    "StaleCheckpointError",
    "StorageError",
    "UnknownTagError",
    "UnsafeCheckpointError",
    "check_loop_bound",
    "default_registry",
    "get_codec",
    "open_persister",
    "restore_future",
    "restore_futures",
    "snapshot_future",
    "unbundle",
)

# Stored data and error messages name classes by module:qualname; pinning the public
# module keeps old checkpoints readable when private modules are renamed (as httpx does).
for _name in __all__:
    _obj = globals()[_name]
    if isinstance(_obj, type):
        _obj.__module__ = "loopaware_persist"
del _name, _obj
