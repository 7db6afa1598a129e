"""``aiida://`` keeps records in the ProcessNode, where AiiDA's tools expect a checkpoint;
other stores are keyed per profile."""

from __future__ import annotations

import gc
import warnings
from pathlib import Path
from typing import Any

import pytest
from aiida import orm
from aiida.tools.archive import create_archive, import_archive
from aiida.tools.archive.abstract import get_format
from aiida.tools.graph.deletions import delete_nodes

from loopaware_persist import CheckpointNotFoundError, StaleCheckpointError, StorageError
from loopaware_persist.aiida import AiidaNodeStorage, ProfileKeyed, installed, open_storage
from loopaware_persist.storage import CheckpointKey, open_storage as open_any
from tests.aiida.helpers import ALLOW, crashed_run

pytestmark = pytest.mark.usefixtures("profile")


@pytest.fixture
def persister() -> Any:
    with installed(allow=ALLOW) as persister:
        yield persister


def _archived_attributes(path: Path, uuid: str) -> dict[str, Any]:
    with get_format().open(path, "r") as reader:
        query = reader.querybuilder().append(
            orm.ProcessNode, filters={"uuid": uuid}, project="attributes"
        )
        return dict(query.one()[0])


def test_the_record_lives_in_the_node_checkpoint_attribute(persister: Any) -> None:
    node = crashed_run(at=1)
    assert isinstance(persister.storage, AiidaNodeStorage)
    assert node.checkpoint.startswith("loopaware-persist:1 ")
    assert node.base.attributes.get(orm.ProcessNode.CHECKPOINT_KEY) == node.checkpoint
    assert [c.pid for c in persister.get_checkpoints()].count(node.pk) == 1
    (info,) = persister.list_info(node.pk)
    assert info.pid == node.pk
    node.delete_checkpoint()  # AiiDA's own call removes ours
    with pytest.raises(CheckpointNotFoundError):
        persister.load_checkpoint(node.pk)


def test_compare_and_set_and_no_tags(persister: Any) -> None:
    node = crashed_run(at=1)
    storage = persister.storage
    version = storage.get(CheckpointKey(pid=node.pk)).version
    with pytest.raises(StaleCheckpointError):
        storage.put(CheckpointKey(pid=node.pk), b"x", expected_version=version - 1)
    assert storage.put(CheckpointKey(pid=node.pk), b"x", expected_version=version) == version + 1
    with pytest.raises(StorageError, match="untagged"):
        storage.put(CheckpointKey(pid=node.pk, tag="t"), b"x")
    node.seal()
    with pytest.raises(StorageError, match="sealed"):
        storage.put(CheckpointKey(pid=node.pk), b"x")
    with pytest.raises(StorageError, match="not a ProcessNode"):
        storage.get(CheckpointKey(pid=node.inputs.x.pk))


def test_deleting_the_node_deletes_the_record(persister: Any) -> None:
    node = crashed_run(at=1)
    pk = node.pk
    delete_nodes([pk], dry_run=False)
    with pytest.raises(CheckpointNotFoundError):
        persister.load_checkpoint(pk)
    assert pk not in [c.pid for c in persister.get_checkpoints()]


# aiida-core 2.9.4's archive reader and writer leave sqlite3 connections to the garbage
# collector, which Python >= 3.13 reports (ResourceWarning, then an unraisable warning when
# collected during a later test). Theirs, not ours: collected and ignored here, in this
# test's own scope, so that no other test inherits them.
@pytest.mark.filterwarnings("ignore::ResourceWarning")
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_archive_export_strips_it_and_import_strips_it_again(
    persister: Any, tmp_path: Path
) -> None:
    try:
        _archive_round_trip(persister, tmp_path)
    finally:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ResourceWarning)
            gc.collect()


def _archive_round_trip(persister: Any, tmp_path: Path) -> None:
    node = crashed_run(at=1)
    # Archives take sealed nodes only: a checkpoint a failed delete_checkpoint left behind.
    node.seal()
    assert node.checkpoint is not None
    uuid = node.uuid
    stripped, kept = tmp_path / "stripped.aiida", tmp_path / "kept.aiida"
    create_archive([node], filename=stripped)
    assert orm.ProcessNode.CHECKPOINT_KEY not in _archived_attributes(stripped, uuid)
    create_archive([node], filename=kept, strip_checkpoints=False)
    assert _archived_attributes(kept, uuid)[orm.ProcessNode.CHECKPOINT_KEY] == node.checkpoint
    delete_nodes([node.pk], dry_run=False)
    import_archive(kept)
    imported = orm.load_node(uuid)
    assert imported.checkpoint is None
    with pytest.raises(CheckpointNotFoundError):
        persister.load_checkpoint(imported.pk)


def test_other_profiles_and_urls() -> None:
    with pytest.raises(StorageError, match="aiida://"):
        open_storage("aiida://x/y")
    from loopaware_persist import ConfigurationError

    with pytest.raises(ConfigurationError, match="not 'elsewhere'"):
        open_storage("aiida://elsewhere")


def test_two_profiles_never_share_a_pid() -> None:
    shared = "memory://loopaware-aiida-profile-keyed"
    one = ProfileKeyed(open_any(shared), "uuid-one")
    two = ProfileKeyed(open_any(shared), "uuid-two")
    one.put(CheckpointKey(pid=7), b"one")
    two.put(CheckpointKey(pid=7), b"two")
    two.put(CheckpointKey(pid=8, tag="t"), b"two-tagged")
    assert one.get(CheckpointKey(pid=7)).data == b"one"
    assert two.get(CheckpointKey(pid=7)).data == b"two"
    assert [i.key for i in one.list()] == [CheckpointKey(pid=7)]
    assert one.list_key_tokens() == [("i:7", None)]
    assert sorted(two.list_key_tokens(), key=str) == [("i:7", None), ("i:8", "t")]
    assert two.delete_pid(7) == 1
    assert one.get(CheckpointKey(pid=7)).data == b"one"
    with pytest.raises(CheckpointNotFoundError):
        one.get(CheckpointKey(pid=8, tag="t"))


def test_sqlite_store_is_keyed_by_the_profile(tmp_path: Path, profile: Any) -> None:
    url = f"sqlite:///{tmp_path}/ck.db"
    with installed(store=url, allow=ALLOW) as persister:
        node = crashed_run(at=1)
        assert [c.pid for c in persister.get_checkpoints()] == [node.pk]
    with open_any(url) as raw:
        (token, tag) = raw.list_key_tokens()[0]
    assert token == f"s:aiida:{profile.uuid}:i:{node.pk}"
    assert tag is None


def test_a_record_left_by_a_deleted_node_is_not_loaded_for_the_node_reusing_its_pk(
    tmp_path: Path,
) -> None:
    """``verdi node delete`` leaves a ``sqlite://`` record behind, and ``core.sqlite_dos``
    hands the pk to the next node: that node must not load the deleted one's checkpoint."""
    from loopaware_persist._envelope import read_header, with_meta
    from loopaware_persist.aiida._storage import NODE_UUID_META

    url = f"sqlite:///{tmp_path}/ck.db"
    with installed(store=url, allow=ALLOW) as persister:
        storage = persister.storage
        assert isinstance(storage, ProfileKeyed)
        node = crashed_run(at=1)
        pk, old_uuid = node.pk, node.uuid
        inner_key = CheckpointKey(pid=storage.prefix + CheckpointKey(pid=pk).token)
        record = storage.inner.get(inner_key).data
        assert read_header(record).meta[NODE_UUID_META] == old_uuid
        assert persister.load_checkpoint(pk)

        # The process node and every node made after it (its calcfunctions', and the
        # constants it passed them), so that the next node made gets its pk back.
        newer = orm.QueryBuilder().append(orm.Node, filters={"id": {">=": pk}}, project="id")
        delete_nodes(newer.all(flat=True), dry_run=False)
        with pytest.raises(CheckpointNotFoundError, match=f"{old_uuid}.*is now no node") as gone:
            persister.load_checkpoint(pk)
        assert gone.value.pid == pk

        new = orm.WorkflowNode().store()
        assert new.pk == pk  # the premise: core.sqlite_dos reuses the pk
        with pytest.raises(
            CheckpointNotFoundError, match=f"{old_uuid}.*is now node {new.uuid}.*rm --store"
        ):
            persister.load_checkpoint(pk)
        # Not the new node's to delete: it stays for the operator, untouched.
        persister.delete_checkpoint(pk)
        assert storage.inner.get(inner_key).data == record

        # A save for the new node replaces it, stamped with the new node's UUID; the
        # stamp is the store's own: a get returns the bytes put, byte for byte.
        meta = {k: v for k, v in read_header(record).meta.items() if k != NODE_UUID_META}
        unstamped = with_meta(record, meta)
        assert NODE_UUID_META not in read_header(unstamped).meta
        storage.put(CheckpointKey(pid=pk), unstamped)
        assert read_header(storage.inner.get(inner_key).data).meta[NODE_UUID_META] == new.uuid
        assert storage.get(CheckpointKey(pid=pk)).data == unstamped
        for size in (0, 10, 200, len(unstamped), len(unstamped) + 5):
            assert storage.read_prefix(CheckpointKey(pid=pk), size) == unstamped[:size]
        persister.delete_checkpoint(pk)
        with pytest.raises(CheckpointNotFoundError):
            storage.inner.get(inner_key)


def test_a_record_without_the_node_stamp_still_loads(tmp_path: Path) -> None:
    """Records written before the stamp existed carry no node UUID: not checked."""
    url = f"sqlite:///{tmp_path}/ck.db"
    with installed(store=url, allow=ALLOW) as persister:
        storage = persister.storage
        node = crashed_run(at=1)
        key = CheckpointKey(pid=node.pk)
        inner_key = CheckpointKey(pid=storage.prefix + key.token)
        unstamped = persister.dumps(persister.load_checkpoint(node.pk))
        storage.inner.put(inner_key, unstamped)
        assert storage.get(key).data == unstamped
        assert persister.load_checkpoint(node.pk)
