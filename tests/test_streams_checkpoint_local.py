"""Local copies of base checkpoints (``worker.state_dir``) on the embedded broker: a restore takes
the base from its copy only when the copy is the chain's last base, whole and its own."""

from __future__ import annotations

import os
import shutil
from collections.abc import Awaitable, Callable
from dataclasses import replace
from pathlib import Path

import pytest
from aiokafka import AIOKafkaProducer

from driftline.config import Settings
from driftline.pipeline.state import BlobFile
from driftline.streams.checkpoint import Checkpoint, CheckpointStore, LocalBases

pytestmark = pytest.mark.integration

# tests/conftest.py's run_with_producer fixture
RunWithProducer = Callable[[Settings, Callable[[AIOKafkaProducer], Awaitable[None]]], None]

SMALL = {"max_chunk_bytes": 64 * 1024, "deliver_group_bytes": 128 * 1024}


def _with_state_dir(settings: Settings, state_dir: Path | None) -> Settings:
    return settings.model_copy(update={"worker": settings.worker.model_copy(update={"state_dir": state_dir})})


async def _store(settings: Settings, producer: AIOKafkaProducer, state_dir: Path | None,
                 **kwargs: int) -> CheckpointStore:
    store = CheckpointStore(_with_state_dir(settings, state_dir), producer, **kwargs)
    await store.start()
    return store


async def _load(settings: Settings, producer: AIOKafkaProducer, state_dir: Path | None,
                shard: int) -> Checkpoint:
    reader = await _store(settings, producer, state_dir)
    try:
        return (await reader.load_all("st", [shard]))[shard]
    finally:
        await reader.stop()


def _same_chain(a: Checkpoint, b: Checkpoint) -> bool:
    return (a.checkpoint_id, a.blob, a.deltas, a.offsets, a.generation) == (
        b.checkpoint_id, b.blob, b.deltas, b.offsets, b.generation)


def test_a_restore_from_the_local_copy_equals_one_from_the_topic(settings: Settings, tmp_path: Path,
                                                                 run_with_producer: RunWithProducer) -> None:
    state_dir = tmp_path / "state"

    async def scenario(producer: AIOKafkaProducer) -> None:
        writer = await _store(settings, producer, state_dir, **SMALL)
        base = os.urandom(300_000)  # five chunks
        link = await writer.save_link("st", 2, base, {("preds", 2): 10}, base=True, parent=None)
        for i in range(3):
            link = await writer.save_link("st", 2, f"d{i}".encode(), {("preds", 2): 11 + i}, base=False,
                                          parent=link)
        await writer.stop()
        assert sorted(p.name for p in state_dir.iterdir()) == [f"{settings.topics.state}.st-2.base"]

        local = await _load(settings, producer, state_dir, 2)
        remote = await _load(settings, producer, None, 2)
        assert _same_chain(local, remote) and local.blob == base and local.deltas == (b"d0", b"d1", b"d2")
        assert (local.local_bytes, remote.local_bytes) == (len(base), 0)
        moved = await _load(settings, producer, tmp_path / "another-workers-state", 2)  # the shard moved
        assert _same_chain(moved, remote) and moved.local_bytes == 0
        # From the topic: the base's last chunk (checked against the copy) and the deltas, not the base.
        assert local.broker_bytes < 64 * 1024 + 3 * 9 * 1024 < len(base) < remote.broker_bytes

        # The restored owner writes on from the local chain, and a later base replaces the copy.
        owner = await _store(settings, producer, state_dir, **SMALL)
        owned = (await owner.load_all("st", [2]))[2]
        assert _same_chain(owned, local) and owned.local_bytes == len(base)
        later = await owner.save_link("st", 2, b"B2" * 50_000, {("preds", 2): 20}, base=True, parent=link)
        await owner.stop()
        again = await _load(settings, producer, state_dir, 2)
        assert (again.checkpoint_id, again.blob, again.local_bytes) == (later, b"B2" * 50_000, 100_000)

    run_with_producer(settings, scenario)


def test_a_copy_of_an_older_base_is_ignored(settings: Settings, tmp_path: Path,
                                            run_with_producer: RunWithProducer) -> None:
    """A copy left from an earlier base, in the same generation or an older one, is not used: the
    chain's last base is read from the topic (a crash between a base's acknowledgement and its
    copy's rename, or a copy that failed, leaves one)."""
    state_dir, aside = tmp_path / "state", tmp_path / "aside"

    async def scenario(producer: AIOKafkaProducer) -> None:
        for shard, rotate in ((1, 2**30), (4, 0)):  # a newer base in the same generation; in the next
            writer = await _store(settings, producer, state_dir, rotate_min_bytes=rotate, **SMALL)
            first = await writer.save_link("st", shard, os.urandom(200_000), {("preds", shard): 1}, base=True,
                                           parent=None)
            await writer.local_copies_kept()
            copy = state_dir / f"{settings.topics.state}.st-{shard}.base"
            aside.mkdir(exist_ok=True)
            shutil.copy(copy, aside / copy.name)
            newer = os.urandom(50_000)  # under half the generation's bytes: rotate_min_bytes decides
            second = await writer.save_link("st", shard, newer, {("preds", shard): 2}, base=True,
                                            parent=first)
            await writer.save_link("st", shard, b"d", {("preds", shard): 3}, base=False, parent=second)
            await writer.stop()
            shutil.copy(aside / copy.name, copy)  # the older base's copy is back

            local = await _load(settings, producer, state_dir, shard)
            remote = await _load(settings, producer, None, shard)
            assert _same_chain(local, remote) and local.blob == newer and local.deltas == (b"d",)
            assert local.local_bytes == 0 and local.generation == (0 if rotate else 1)

    run_with_producer(settings, scenario)


def _rewrite_trailer(path: Path, **changes: object) -> None:
    """The copy at ``path`` with its trailer's fields changed (its blob unchanged)."""
    copies = LocalBases(path.parent)
    state_topic, rest = path.name.removesuffix(".base").rsplit(".", 1)
    stage, shard = rest.rsplit("-", 1)
    position = copies.find(state_topic, stage, int(shard))
    assert position is not None
    blob = copies.read(position)
    assert blob is not None
    staged = copies.stage(state_topic, stage, int(shard), blob, position.crc)
    assert staged is not None and copies.keep(staged, replace(position, **changes))  # type: ignore[arg-type]


def test_a_corrupt_truncated_or_foreign_copy_is_ignored(settings: Settings, tmp_path: Path,
                                                        run_with_producer: RunWithProducer) -> None:
    state_dir = tmp_path / "state"

    def flip_a_blob_byte(path: Path) -> None:
        data = bytearray(path.read_bytes())
        data[1000] ^= 0xFF
        path.write_bytes(bytes(data))

    def truncate(path: Path) -> None:
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 2])

    def cut_the_trailer(path: Path) -> None:
        path.write_bytes(path.read_bytes()[:-3])

    def another_shards_copy(path: Path) -> None:
        shutil.copy(path.with_name(path.name.replace("st-2.", "st-3.")), path)

    def garbage(path: Path) -> None:
        path.write_bytes(os.urandom(5000))

    def another_checkpoint_at_that_offset(path: Path) -> None:  # e.g. a copy from another cluster
        _rewrite_trailer(path, checkpoint_id="0" * 32)

    def an_offset_past_the_end(path: Path) -> None:
        _rewrite_trailer(path, last_chunk=10_000)

    def an_offset_on_a_delta(path: Path) -> None:
        _rewrite_trailer(path, last_chunk=_last_chunk(path) + 1)

    def _last_chunk(path: Path) -> int:
        position = LocalBases(path.parent).find(settings.topics.state, "st", 2)
        assert position is not None
        return position.last_chunk

    async def scenario(producer: AIOKafkaProducer) -> None:
        writer = await _store(settings, producer, state_dir, **SMALL)
        for shard in (2, 3):
            base = await writer.save_link("st", shard, os.urandom(200_000), {("preds", shard): 1}, base=True,
                                          parent=None)
            await writer.save_link("st", shard, b"d1", {("preds", shard): 2}, base=False, parent=base)
        await writer.stop()
        copy = state_dir / f"{settings.topics.state}.st-2.base"
        good = copy.read_bytes()
        remote = await _load(settings, producer, None, 2)
        assert (await _load(settings, producer, state_dir, 2)).local_bytes == len(remote.blob)
        for spoil in (flip_a_blob_byte, truncate, cut_the_trailer, another_shards_copy, garbage,
                      another_checkpoint_at_that_offset, an_offset_past_the_end, an_offset_on_a_delta):
            copy.write_bytes(good)
            spoil(copy)
            local = await _load(settings, producer, state_dir, 2)
            assert _same_chain(local, remote), spoil.__name__
            assert local.local_bytes == 0, spoil.__name__

    run_with_producer(settings, scenario)


def test_a_copy_that_cannot_be_written_is_counted_and_the_checkpoint_kept(
        settings: Settings, tmp_path: Path, run_with_producer: RunWithProducer) -> None:
    not_a_dir = tmp_path / "file"
    not_a_dir.write_bytes(b"")

    async def scenario(producer: AIOKafkaProducer) -> None:
        writer = await _store(settings, producer, not_a_dir / "state")
        base = await writer.save_link("st", 0, b"base", {("preds", 0): 1}, base=True, parent=None)
        await writer.save_link("st", 0, b"d", {("preds", 0): 2}, base=False, parent=base)
        await writer.stop()
        assert writer.local_copy_failures == {"st": 1}
        restored = await _load(settings, producer, not_a_dir / "state", 0)
        assert (restored.blob, restored.deltas, restored.local_bytes) == (b"base", (b"d",), 0)

    run_with_producer(settings, scenario)


def test_the_store_tells_which_base_a_restore_here_reads_from_disk(
        settings: Settings, tmp_path: Path, run_with_producer: RunWithProducer) -> None:
    state_dir = tmp_path / "state"
    not_a_dir = tmp_path / "file"
    not_a_dir.write_bytes(b"")

    async def scenario(producer: AIOKafkaProducer) -> None:
        writer = await _store(settings, producer, state_dir)
        base = await writer.save_link("st", 0, b"base", {("preds", 0): 1}, base=True, parent=None)
        delta = await writer.save_link("st", 0, b"d", {("preds", 0): 2}, base=False, parent=base)
        assert writer.has_local_base("st", 0, base)
        assert not writer.has_local_base("st", 0, delta) and not writer.has_local_base("st", 1, base)
        await writer.stop()

        reader = await _store(settings, producer, state_dir)  # a restart on the same disk
        chain = (await reader.load_all("st", [0]))[0]
        assert (chain.base_id, chain.local_bytes) == (base, 4) and reader.has_local_base("st", 0, base)
        newer = await reader.save_link("st", 0, b"base2", {("preds", 0): 3}, base=True,
                                       parent=chain.checkpoint_id)
        assert reader.has_local_base("st", 0, newer) and not reader.has_local_base("st", 0, base)
        await reader.stop()

        remote = await _store(settings, producer, None)  # no state_dir: every base from the broker
        chain = (await remote.load_all("st", [0]))[0]
        assert chain.base_id == newer and not remote.has_local_base("st", 0, newer)
        other = await remote.save_link("st", 1, b"b1", {("preds", 1): 1}, base=True, parent=None)
        assert not remote.has_local_base("st", 1, other)
        await remote.stop()

        failing = await _store(settings, producer, not_a_dir / "state")  # its copies cannot be written
        lost = await failing.save_link("st", 2, b"b2", {("preds", 2): 1}, base=True, parent=None)
        await failing.local_copies_kept()
        assert failing.local_copy_failures == {"st": 1} and not failing.has_local_base("st", 2, lost)
        await failing.stop()

    run_with_producer(settings, scenario)


@pytest.mark.parametrize("kernel", ["copy_file_range", "refused midway", "missing"])
def test_a_base_in_a_file_is_staged_byte_for_byte(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                  kernel: str) -> None:
    """A base in a file (as the runner writes them) is copied to its local copy by the kernel, file
    to file (no buffer in the worker); where the call is refused midway or missing, the rest is
    copied by hand from where it stopped: the same bytes every way, the blob's offset honoured."""
    blob = os.urandom(3 * 2**20 + 17)
    with open(tmp_path / "spooled", "w+b") as file:
        file.write(b"head" + blob)
        if kernel == "missing":
            monkeypatch.delattr(os, "copy_file_range", raising=False)
        elif kernel == "refused midway":
            real = os.copy_file_range
            calls = []

            def refuse_second(src: int, dst: int, count: int, offset_src: int | None = None) -> int:
                calls.append(count)
                if len(calls) > 1:
                    raise OSError(18, "cross-device")
                return real(src, dst, min(count, 2**20), offset_src)

            monkeypatch.setattr(os, "copy_file_range", refuse_second)
        copies = LocalBases(tmp_path / "state")
        staged = copies.stage("st", "shard", 0, BlobFile(file, len(blob), offset=4), 0)
    assert staged is not None and staged.path.read_bytes() == blob
