"""The multivariate section leaves out features that are constant on the reference (issue 16).

A constant column's normal scores are one value, a dimension the PCA fits as never varying: the
reference's reconstruction errors were all 0.00 on elec2's first 5,000 rows (three constant
columns), so the episode monitor was calibrated on nothing and any later value was a huge error.
"""

from __future__ import annotations

import csv
import itertools
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from driftline.cli.main import main
from driftline.operators.model_watch import MultivariateReference, constant_features, multivariate_section
from driftline.operators.profile import ReferenceProfile, build_profile

ELEC2 = Path("/work/shared/data/elec2.csv")


def _varying(n: int = 1_000) -> dict[str, list[Any]]:
    rng = np.random.default_rng(16)
    a = rng.normal(size=n)
    return {"a": a.round(6).tolist(), "b": (0.8 * a + 0.6 * rng.normal(size=n)).round(6).tolist(),
            "n": rng.poisson(3.0, n).tolist()}


def _write_csv(path: Path, columns: dict[str, list[Any]]) -> Path:
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(columns)
        writer.writerows(zip(*columns.values(), strict=True))
    return path


def test_constant_and_near_constant_features_are_left_out() -> None:
    table: dict[str, list[Any]] = {**_varying(), "flat": [0.42] * 1_000,
                                      "rare": [0.0] * 995 + [5.0] * 5,  # 99.5 % one value
                                      "flag": [0, 1, 1, 1] * 250, "empty": [None] * 1_000}
    names = ["a", "b", "n", "flat", "rare", "flag", "empty"]
    assert constant_features(table, names) == ["flat", "rare", "empty"]
    section = multivariate_section(table)
    assert section is not None and section["features"] == ["a", "b", "n", "flag"]
    reference = MultivariateReference.from_section(section)
    assert reference.reconstruction.p99 > 0  # a calibration, not a degenerate 0.00
    # Named features are taken as they are.
    named = multivariate_section(table, features=["a", "b", "flat"])
    assert named is not None and named["features"] == ["a", "b", "flat"]
    # Fewer than 2 varying numeric features: no section.
    assert multivariate_section({"a": table["a"], "flat": table["flat"], "rare": table["rare"]}) is None


def test_a_table_without_constant_columns_keeps_its_profile_id() -> None:
    table = _varying()
    section = multivariate_section(table)
    assert section is not None and section["features"] == ["a", "b", "n"]
    # Every feature varies: the section is the one the named features give (taken as they are, as
    # before the change), so the profile and its id are too. Not a pinned id: a section's floats
    # (PCA basis, precision matrix) differ in the last bits with the CPU's OpenBLAS kernels.
    named = multivariate_section(table, features=["a", "b", "n"])
    assert section == named
    profiles = [build_profile("m", "1", table, label_column=None, prediction_column=None, bins=5, top_k=3,
                              created_at_ms=0, multivariate=s) for s in (section, named)]
    assert profiles[0].profile_id == profiles[1].profile_id


def test_profile_build_says_which_features_it_left_out(tmp_path: Path,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    table: dict[str, list[Any]] = {**_varying(), "flat": [0.42] * 1_000}
    out = tmp_path / "p.json"
    data = _write_csv(tmp_path / "t.csv", table)
    assert main(["profile", "build", "--model", "m", "--version", "1", "--data", str(data), "--no-publish",
                 "--out", str(out)]) == 0
    err = capsys.readouterr().err
    assert "left out constant feature(s) flat" in err and "no multivariate section" not in err
    profile = ReferenceProfile.model_validate_json(out.read_bytes())
    assert profile.multivariate is not None and profile.multivariate["features"] == ["a", "b", "n"]
    assert "flat" in profile.features  # still profiled one by one

    data = _write_csv(tmp_path / "one.csv", {"a": table["a"], "flat": table["flat"]})
    assert main(["profile", "build", "--model", "m", "--version", "1", "--data", str(data), "--no-publish",
                 "--out", str(out)]) == 0
    err = " ".join(capsys.readouterr().err.split())  # rich may wrap the line
    assert "left out constant feature(s) flat" in err and "fewer than 2: no multivariate section" in err
    assert ReferenceProfile.model_validate_json(out.read_bytes()).multivariate is None


@pytest.mark.skipif(not ELEC2.is_file(), reason=f"shared dataset {ELEC2} not present")
def test_elec2_first_5000_rows_calibrate_on_the_varying_columns(tmp_path: Path,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    data = tmp_path / "elec2_5000.csv"
    with ELEC2.open() as src, data.open("w") as dst:
        dst.writelines(itertools.islice(src, 5_001))
    out = tmp_path / "p.json"
    assert main(["profile", "build", "--model", "elec2", "--version", "1", "--data", str(data),
                 "--label-column", "class", "--no-publish", "--out", str(out)]) == 0
    err = " ".join(capsys.readouterr().err.split())
    assert "left out constant feature(s) vicprice, vicdemand, transfer" in err
    section = ReferenceProfile.model_validate_json(out.read_bytes()).multivariate
    assert section is not None
    assert section["features"] == ["date", "day", "period", "nswprice", "nswdemand"]
    assert MultivariateReference.from_section(section).reconstruction.p99 > 0.1
