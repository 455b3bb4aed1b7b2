"""The compiled decode pass's layout decoders under many feature layouts: how many are built.

A batch's feature objects are decoded by a decoder compiled for its first object's layout
(``struct_decode._layout_decoder``, ~0.1 ms to build), cached for the 256 layouts last used. With
more layouts than that (models with their own feature sets), the cache's policy decides how often
decoders are built again. This feeds a Zipf stream of layouts (a batch's first layout drawn with
weight 1/rank) through the real cache and counts its builds (misses), beside the count the former
policy (every decoder dropped once 256 were held) would have made on the same stream, and times one
build.

    .venv/bin/python bench/bench_decode_layouts.py [--layouts 400] [--batches 12000]
"""

from __future__ import annotations

import argparse
import random
import time
from collections.abc import Sequence

from driftline.operators import struct_decode


def clear_all_builds(stream: Sequence[tuple[str, ...]], size: int) -> int:
    """Builds under the former policy: a dict of decoders emptied once it held ``size``."""
    held: set[tuple[str, ...]] = set()
    builds = 0
    for names in stream:
        if names not in held:
            builds += 1
            if len(held) >= size:
                held.clear()
            held.add(names)
    return builds


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--layouts", type=int, default=400)
    parser.add_argument("--batches", type=int, default=12_000)
    args = parser.parse_args(argv)
    if struct_decode.msgspec is None:
        print("msgspec not installed: no compiled pass")
        return 0
    rng = random.Random(1)
    layouts = [tuple([f"f{j}" for j in range(10)] + [f"m{i}_{j}" for j in range(3)])
               for i in range(args.layouts)]
    stream = rng.choices(layouts, [1 / (rank + 1) for rank in range(args.layouts)], k=args.batches)
    cache = struct_decode._layout_decoder
    cache.cache_clear()
    t = time.process_time()
    for names in stream:
        cache(names)
    spent = time.process_time() - t
    lru = cache.cache_info().misses
    size = struct_decode._MAX_LAYOUT_DECODERS
    print(f"{args.batches:,} batches over {args.layouts} layouts (Zipf), {size} decoders kept: "
          f"built {lru:,} (least recently used out) vs {clear_all_builds(stream, size):,} "
          f"(all dropped at {size}); {spent / lru * 1e6:.0f} CPU-us a build (with the lookups)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
