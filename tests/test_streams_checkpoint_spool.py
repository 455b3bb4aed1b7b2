"""A chain's large base is restored from a file, never whole in memory (docs/state.md, "At
10,000,000 pending"): read from the broker its chunks go to a temporary file as they arrive, their
CRC computed on the way; a local copy is read where it is, after its CRC is checked."""

from __future__ import annotations

import asyncio
import os
import tempfile
from pathlib import Path

import pytest
from aiokafka import AIOKafkaProducer

from driftline.config import Settings
from driftline.kafka.admin import ensure_topics
from driftline.kafka.clients import aiokafka_producer_kwargs
from driftline.pipeline.state import BlobFile, dump_delta
from driftline.streams.checkpoint import (
    BASE,
    DELTA,
    ChainDeltas,
    CheckpointAssembler,
    CheckpointStore,
    assemble_chain,
    encode_chunks,
)
from driftline.streams.runner import chain_records

SMALL = {"max_chunk_bytes": 64 * 1024, "deliver_group_bytes": 128 * 1024}


def _settings(settings: Settings, state_dir: Path | None, spill_dir: Path) -> Settings:
    return settings.model_copy(update={
        "worker": settings.worker.model_copy(update={"state_dir": state_dir}),
        "join": settings.join.model_copy(update={"spill_dir": spill_dir})})


def test_the_assembler_spools_a_large_base_and_checks_its_crc(tmp_path: Path) -> None:
    """Chunks of a base over ``spool_above`` go to a file (nothing left in the directory: it is
    unlinked); a flipped byte fails the running CRC as it failed the whole blob's; a later base
    closes the earlier one's file; deltas and small bases stay in memory."""
    base, later = os.urandom(200_000), os.urandom(50_000)
    assembler = CheckpointAssembler(keep_all=True, spool_above=100_000, spool_dir=tmp_path)
    for value in encode_chunks("b1", base, {}, 20_000, BASE):
        assembler.apply("k", value)
    for value in encode_chunks("d1", b"delta", {}, 20_000, DELTA, "b1"):
        assembler.apply("k", value)
    links = list(assembler.completed or ())
    spooled = links[0].blob
    assert isinstance(spooled, BlobFile) and spooled.read() == base and links[1].blob == b"delta"
    assert os.listdir(tmp_path) == []
    for value in encode_chunks("b2", later, {}, 20_000, BASE):  # small: in memory
        assembler.apply("k", value)
    assert [link.blob for link in assembler.completed or ()] == [later] and spooled.file.closed

    torn = CheckpointAssembler(keep_all=True, spool_above=100_000, spool_dir=tmp_path)
    values = encode_chunks("b3", base, {}, 20_000, BASE)
    values[4] = values[4][:-1] + bytes([values[4][-1] ^ 1])
    for value in values:
        torn.apply("k", value)
    assert torn.completed == [] and torn.discarded_chunks == len(values)


def _run(settings: Settings, scenario: object) -> None:
    ensure_topics(settings)

    async def main() -> None:
        producer = AIOKafkaProducer(**aiokafka_producer_kwargs(settings))
        await producer.start()
        try:
            await scenario(producer)  # type: ignore[operator]
        finally:
            await producer.stop()

    asyncio.run(main())


@pytest.mark.integration
def test_a_large_base_restores_from_a_file_from_the_broker_and_from_its_local_copy(
        settings: Settings, tmp_path: Path) -> None:
    """A base written from a file, its chain read three ways: from the broker (spooled), from the
    local copy (the copy's file itself), and from the broker again once the copy is corrupt (never
    used)."""
    state_dir, spill_dir = tmp_path / "state", tmp_path / "spill"

    async def load(producer: AIOKafkaProducer, state: Path | None) -> tuple[object, tuple[bytes, ...], int]:
        reader = CheckpointStore(_settings(settings, state, spill_dir), producer, spool_above=100_000)
        await reader.start()
        try:
            chain = (await reader.load_all("st", [1]))[1]
        finally:
            await reader.stop()
        assert isinstance(chain.blob, BlobFile)
        with chain.blob.file:
            return chain.blob.read(), chain.deltas, chain.local_bytes

    async def scenario(producer: AIOKafkaProducer) -> None:
        writer = CheckpointStore(_settings(settings, state_dir, spill_dir), producer, **SMALL)
        await writer.start()
        base = os.urandom(300_000)
        with tempfile.TemporaryFile() as file:  # written from a file, as the runner writes bases
            file.write(base)
            link = await writer.save_link("st", 1, BlobFile(file, len(base)), {("preds", 1): 10}, base=True,
                                          parent=None)
        await writer.save_link("st", 1, b"d0", {("preds", 1): 11}, base=False, parent=link)
        await writer.stop()
        assert await load(producer, None) == (base, (b"d0",), 0)
        assert await load(producer, state_dir) == (base, (b"d0",), len(base))
        copy = next(state_dir.iterdir())
        with open(copy, "r+b") as file:
            file.seek(1_000)
            byte = file.read(1)
            file.seek(1_000)
            file.write(bytes([byte[0] ^ 1]))
        assert await load(producer, state_dir) == (base, (b"d0",), 0)
        assert os.listdir(spill_dir) == []  # the spooled files are gone with their blobs

    _run(settings, scenario)


def test_the_assembler_spools_large_deltas_to_one_file_and_reads_each_when_asked(tmp_path: Path) -> None:
    """Deltas over ``spool_deltas_above`` go to one shared file as their chunks arrive (unlinked:
    nothing in the directory), each read back only when the restore asks for it, equal to what was
    written; their heads give the records they carry without reading them; a flipped byte fails
    the delta's CRC (the chain ends before it); a later base retires the file once no delta in it
    is needed (read it after the chain is assembled); small deltas stay in memory (a tuple, as
    before)."""
    base = b"B" * 1000
    deltas = [dump_delta(os.urandom(30_000 + i), records=100 + i) for i in range(3)]
    assembler = CheckpointAssembler(keep_all=True, spool_above=100_000, spool_dir=tmp_path,
                                    spool_deltas_above=20_000)
    parent = "b1"
    for value in encode_chunks("b1", base, {}, 20_000, BASE):
        assembler.apply("k", value)
    for i, delta in enumerate(deltas):
        for value in encode_chunks(f"d{i}", delta, {}, 20_000, DELTA, parent):
            assembler.apply("k", value)
        parent = f"d{i}"
    chain = assemble_chain(assembler.completed or ())
    assert chain is not None and isinstance(chain.deltas, ChainDeltas)
    assert os.listdir(tmp_path) == []
    assert list(chain.deltas) == deltas and chain.delta_bytes == sum(map(len, deltas))
    assert chain_records(chain.deltas) == 100 + 101 + 102
    spool = chain.deltas._items[0].spool  # type: ignore[union-attr]
    assert spool.end == sum(map(len, deltas))  # one file, each delta where it reserved its room

    torn = encode_chunks("d3", deltas[0], {}, 20_000, DELTA, parent)
    torn[1] = torn[1][:-1] + bytes([torn[1][-1] ^ 1])
    for value in torn:
        assembler.apply("k", value)
    again = assemble_chain(assembler.completed or ())
    assert again is not None and again.checkpoint_id == "d2" and len(again.deltas) == 3

    for value in encode_chunks("b2", base, {}, 20_000, BASE):  # a later base: those deltas are no link
        assembler.apply("k", value)
    assert spool.file.closed
    for value in encode_chunks("d4", b"small", {}, 20_000, DELTA, "b2"):
        assembler.apply("k", value)
    last = assemble_chain(assembler.completed or ())
    assert last is not None and last.deltas == (b"small",)


def test_a_chain_with_large_deltas_restores_them_from_a_file_through_the_store(
        settings: Settings, tmp_path: Path) -> None:
    """A chain whose deltas are over ``spool_deltas_above``, read by ``load_all`` from the broker and
    with the base's local copy: the same deltas, in order, from a spooled file that goes when the
    checkpoint is closed; the base and the offsets as before."""
    state_dir, spill_dir = tmp_path / "state", tmp_path / "spill"
    deltas = [dump_delta(os.urandom(150_000), records=7) for _ in range(3)]

    async def load(producer: AIOKafkaProducer, state: Path | None) -> tuple[object, ...]:
        reader = CheckpointStore(_settings(settings, state, spill_dir), producer, spool_above=100_000,
                                 spool_deltas_above=100_000)
        await reader.start()
        try:
            chain = (await reader.load_all("st", [2]))[2]
        finally:
            await reader.stop()
        assert isinstance(chain.deltas, ChainDeltas) and os.listdir(spill_dir) == []
        figures = (list(chain.deltas), chain.offsets, chain_records(chain.deltas), chain.local_bytes > 0)
        chain.close()
        return figures

    async def scenario(producer: AIOKafkaProducer) -> None:
        writer = CheckpointStore(_settings(settings, state_dir, spill_dir), producer, **SMALL)
        await writer.start()
        link = await writer.save_link("st", 2, os.urandom(300_000), {("preds", 2): 10}, base=True,
                                      parent=None)
        for i, delta in enumerate(deltas):
            link = await writer.save_link("st", 2, delta, {("preds", 2): 11 + i}, base=False, parent=link)
        await writer.stop()
        expected = [deltas, {("preds", 2): 13}, 21]
        assert await load(producer, None) == (*expected, False)
        assert await load(producer, state_dir) == (*expected, True)

    _run(settings, scenario)
