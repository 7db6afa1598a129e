"""loopaware_persist: loop-aware, safe, crash-consistent checkpoints for plumpy."""

from ._awaiting import (
    AwaitedFutures as AwaitedFutures,
    relink_awaited as relink_awaited,
)
from ._bridge import (
    LoopBridge as LoopBridge,
)
from ._client import (
    WorkerClient as WorkerClient,
)
from ._errors import (
    ArgumentTypeError as ArgumentTypeError,
    BackendUnavailableError as BackendUnavailableError,
    CheckpointNotFoundError as CheckpointNotFoundError,
    ConfigurationError as ConfigurationError,
    CorruptCheckpointError as CorruptCheckpointError,
    CorruptStoredRecordError as CorruptStoredRecordError,
    DecodeError as DecodeError,
    DurabilityError as DurabilityError,
    EncodeError as EncodeError,
    FencedError as FencedError,
    FenceReason as FenceReason,
    ForeignException as ForeignException,
    LoopAwarePersistError as LoopAwarePersistError,
    LoopBoundaryError as LoopBoundaryError,
    NoEventLoopError as NoEventLoopError,
    OpsError as OpsError,
    ShutdownFencedError as ShutdownFencedError,
    StaleCheckpointError as StaleCheckpointError,
    StaleFencedError as StaleFencedError,
    StorageError as StorageError,
    UnavailableFencedError as UnavailableFencedError,
    UnknownTagError as UnknownTagError,
    UnlinkedAwaitableError as UnlinkedAwaitableError,
    UnsafeCheckpointError as UnsafeCheckpointError,
    UnsafeLoadWarning as UnsafeLoadWarning,
)
from ._fencing import (
    FencingPersister as FencingPersister,
)
from ._hooks import (
    default_registry as default_registry,
)
from ._launcher import (
    LoopAwareLauncher as LoopAwareLauncher,
)
from ._loop import (
    LoopContext as LoopContext,
)
from ._loop_check import check_loop_bound as check_loop_bound
from ._messages import (
    MessageCodec as MessageCodec,
    RefusedMessage as RefusedMessage,
    decode_message as decode_message,
    encode_message as encode_message,
)
from ._persister import (
    CheckpointInfo as CheckpointInfo,
    LoopAwarePersister as LoopAwarePersister,
    open_persister as open_persister,
)
from ._registry import (
    Hook as Hook,
    HookRegistry as HookRegistry,
)
from ._snapshot import (
    FutureSnapshot as FutureSnapshot,
    FutureStatus as FutureStatus,
    restore_future as restore_future,
    restore_futures as restore_futures,
    snapshot_future as snapshot_future,
)
from ._unbundle import (
    LoopAwareBundle as LoopAwareBundle,
    unbundle as unbundle,
)
from ._worker import (
    Worker as Worker,
    run_worker as run_worker,
)
from .codecs import (
    Codec as Codec,
    get_codec as get_codec,
)

__version__ = "0.1.0.dev0"

__all__ = (
    "ArgumentTypeError",
    "AwaitedFutures",
    "BackendUnavailableError",
    "CheckpointInfo",
    "CheckpointNotFoundError",
    "Codec",
    "ConfigurationError",
    "CorruptCheckpointError",
    "CorruptStoredRecordError",
    "DecodeError",
    "DurabilityError",
    "EncodeError",
    "FenceReason",
    "FencedError",
    "FencingPersister",
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
    "MessageCodec",
    "NoEventLoopError",
    "OpsError",
    "RefusedMessage",
    "ShutdownFencedError",
    "StaleCheckpointError",
    "StaleFencedError",
    "StorageError",
    "UnavailableFencedError",
    "UnknownTagError",
    "UnlinkedAwaitableError",
    "UnsafeCheckpointError",
    "UnsafeLoadWarning",
    "Worker",
    "WorkerClient",
    "check_loop_bound",
    "decode_message",
    "default_registry",
    "encode_message",
    "get_codec",
    "open_persister",
    "relink_awaited",
    "restore_future",
    "restore_futures",
    "run_worker",
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
