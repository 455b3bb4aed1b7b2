"""The compiled pass's per-layout decoders: a stream of more feature layouts than the cache holds
keeps the layouts it uses often (least recently used out), and still decodes every layout."""

from __future__ import annotations

import pytest

from driftline.operators import struct_decode

pytestmark = pytest.mark.skipif(struct_decode.msgspec is None, reason="a light install: no compiled pass")


def test_a_layout_in_use_keeps_its_decoder_while_many_others_pass() -> None:
    hot = ("hot x", "hot c")
    decode = struct_decode._layout_decoder(hot)
    for i in range(struct_decode._MAX_LAYOUT_DECODERS + 44):  # (300 others: past the cache's size)
        struct_decode._layout_decoder((f"rare {i}",))
        # read between the others, as a busy model's batches come between rare models' batches
        assert struct_decode._layout_decoder(hot) is decode, i
    info = struct_decode._layout_decoder.cache_info
    assert info().currsize <= struct_decode._MAX_LAYOUT_DECODERS
    misses = info().misses
    struct_decode._layout_decoder(("rare 0",))  # (the least recently used: out of the cache, built again)
    assert info().misses == misses + 1


def test_batches_of_more_layouts_than_the_cache_holds_decode_as_rows() -> None:
    raw = struct_decode.msgspec.Raw
    for i in range(struct_decode._MAX_LAYOUT_DECODERS + 44):
        texts = [raw(b'{"x":%d,"f%d":"a"}' % (i, i)), raw(b'{"x":1.5,"f%d":null}' % i)]
        maps = struct_decode._feature_maps(texts)
        assert isinstance(maps, struct_decode.FeatureRows)
        assert list(maps) == [{"x": i, f"f{i}": "a"}, {"x": 1.5, f"f{i}": None}]
