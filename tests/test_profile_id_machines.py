"""A profile with a multivariate section has the same id on any machine.

The section's fitted floats (PCA basis, precision matrix, outlier scores) differ in the last bits
from one CPU's OpenBLAS kernels to another's, and the reference-error histogram can follow. The id
hashed them, so re-publishing the same training table from another machine made a new reference.
OpenBLAS picks its kernels by ``OPENBLAS_CORETYPE``: two SSE-era cores, which any x86-64 runs,
stand in for two machines.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
from typing import Any

import numpy as np
import pytest

from driftline.operators.model_watch import multivariate_section
from driftline.operators.profile import build_profile

_BUILD = """
import hashlib, json, sys
import numpy as np, orjson
sys.path.insert(0, {tests!r})
from test_profile_id_machines import _table, _profile
from driftline.operators.model_watch import multivariate_section
section = multivariate_section(_table())
fitted = {{k: section[k] for k in ("reconstruction", "outliers", "errors")}}
print(json.dumps({{"id": _profile(_table(), section).profile_id,
                  "fitted": hashlib.sha256(orjson.dumps(fitted, option=orjson.OPT_SORT_KEYS)).hexdigest()}}))
"""


def _table(n: int = 3_000, shift: float = 0.0) -> dict[str, list[Any]]:
    rng = np.random.default_rng(19)
    a = rng.normal(size=n)
    return {"a": (a + shift).tolist(), "b": (0.8 * a + 0.6 * rng.normal(size=n)).tolist(),
            "c": rng.gamma(2.0, size=n).tolist(), "d": rng.normal(size=n).tolist(),
            "e": (a * rng.normal(size=n)).tolist()}


def _profile(table: dict[str, list[Any]], section: dict[str, Any] | None) -> Any:
    return build_profile("m", "1", table, label_column=None, prediction_column=None, bins=10, top_k=5,
                         created_at_ms=0, multivariate=section)


def _built_with(core: str) -> dict[str, str]:
    tests = os.path.dirname(__file__)
    env = {**os.environ, "OPENBLAS_CORETYPE": core}
    out = subprocess.run([sys.executable, "-c", _BUILD.format(tests=tests)], env=env, check=True,
                         capture_output=True, text=True, timeout=300).stdout
    return json.loads(out.strip().splitlines()[-1])  # type: ignore[no-any-return]


@pytest.mark.skipif(platform.machine() not in ("x86_64", "AMD64"), reason="the core types named are x86's")
def test_two_cpus_kernels_fit_other_floats_and_give_one_profile_id() -> None:
    prescott, nehalem = _built_with("Prescott"), _built_with("Nehalem")
    if prescott["fitted"] == nehalem["fitted"]:
        pytest.skip("this numpy's OpenBLAS fits the same floats with both kernels: nothing to compare")
    assert prescott["id"] == nehalem["id"]


def test_the_id_follows_the_training_table_and_the_options() -> None:
    table = _table()
    section = multivariate_section(table)
    assert section is not None
    same = _profile(table, multivariate_section(table)).profile_id
    assert _profile(table, section).profile_id == same
    # Another table, or the same table fitted with another seed, is another reference.
    shifted = _table(shift=0.5)
    assert _profile(table, multivariate_section(shifted)).profile_id != same
    assert _profile(table, multivariate_section(table, seed=1)).profile_id != same
    assert _profile(table, multivariate_section(table, features=["a", "b"])).profile_id != same
    assert _profile(table, None).profile_id != same


def test_a_section_made_before_it_had_a_source_is_hashed_whole() -> None:
    # Profiles published before keep their ids: the fitted content still counts there.
    table = _table()
    section = multivariate_section(table)
    assert section is not None
    legacy = {k: v for k, v in section.items() if k != "source"}
    refitted = {"reconstruction": {**section["reconstruction"], "p99": 1.5}}
    assert _profile(table, legacy).profile_id != _profile(table, {**legacy, **refitted}).profile_id
    # With a source, the fitted floats do not count: they are what differs between machines.
    assert _profile(table, section).profile_id == _profile(table, {**section, **refitted}).profile_id
