"""Scenario: everything that determines the simulated traffic (seeded, so runs are reproducible).

Times inside a scenario are seconds after its start (``at_s``); the ground truth reports them as
absolute epoch milliseconds.
"""

from __future__ import annotations

import time
import tomllib
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, model_validator

from driftline.schemas.events import EpochMillis

SourceKind = Literal["gaussian", "agrawal", "hyperplane", "sea", "csv"]
MalformedKind = Literal["bad_json", "wrong_types", "nan_latency", "unknown_schema_version"]
MALFORMED_KINDS: tuple[MalformedKind, ...] = (
    "bad_json", "wrong_types", "nan_latency", "unknown_schema_version",
)


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid")


class CovariateDrift(_Spec):
    """A change of one feature's distribution from ``at_s`` on (reaching full size after ``ramp_s``)."""

    feature: str
    at_s: float = Field(ge=0)
    magnitude: float = Field(default=1.0, description="numeric: mean shift in reference std units; "
                                              "categorical: probability that a value is re-drawn")
    ramp_s: float = Field(default=0.0, ge=0, description="0 = abrupt; else linear ramp to full magnitude")
    categories: dict[str, float] | None = Field(
        default=None, description="categorical: weights of re-drawn values; default the rarest category"
    )


class ConceptDrift(_Spec):
    """The label function changes at ``at_s``: labels flip where ``feature`` is above its reference
    ``1 - magnitude`` quantile, i.e. in a region holding ``magnitude`` of the reference traffic."""

    at_s: float = Field(ge=0)
    magnitude: float = Field(default=0.3, gt=0, le=1)
    feature: str | None = Field(default=None, description="numeric region feature; default the first")
    ramp_s: float = Field(default=0.0, ge=0)


class LabelDelay(_Spec):
    distribution: Literal["lognormal", "exponential", "fixed"] = "lognormal"
    median_s: float = Field(default=60.0, ge=0)
    sigma: float = Field(default=1.0, gt=0, description="lognormal shape")
    max_s: float | None = Field(default=None, gt=0, description="cap on the delay")


class ModelSpec(_Spec):
    model_id: str = Field(min_length=1)
    traffic_share: float = Field(default=1.0, gt=0)
    source: SourceKind = "gaussian"
    n_numeric: int = Field(default=5, ge=0, le=1000, description="gaussian/hyperplane: numeric features")
    n_categorical: int = Field(default=2, ge=0, le=100, description="gaussian: categorical features")
    n_categories: int = Field(default=4, ge=2, le=26)
    csv_path: Path | None = None
    label_column: str | None = None
    version: str = "1"
    accuracy: float = Field(default=0.92, ge=0, le=1, description="champion accuracy on its learned concept")
    challenger: bool = Field(default=False, description="also score every request with a challenger version")
    challenger_version: str = "2"
    challenger_accuracy: float = Field(default=0.85, ge=0, le=1, description="follows the current concept")
    latency_median_ms: float = Field(default=15.0, gt=0)
    score: Literal["confidence", "positive"] = Field(
        default="confidence",
        description="a binary model's score: the probability of its predicted label, or of the "
        "positive (last) class, as CBPE (performance estimated before labels) reads it",
    )
    covariate_drift: list[CovariateDrift] = []
    concept_drift: ConceptDrift | None = None

    @model_validator(mode="after")
    def _csv_complete(self) -> ModelSpec:
        if self.source == "csv" and (self.csv_path is None or not self.label_column):
            raise ValueError("source 'csv' needs csv_path and label_column")
        if self.challenger and self.challenger_version == self.version:
            raise ValueError("challenger_version must differ from version")
        return self


class Scenario(_Spec):
    seed: int = 0
    id_namespace: str | None = Field(
        default=None, min_length=1, pattern=r"^[A-Za-z0-9_.]+$",
        description="middle part of the prediction ids ({model}-{namespace}-{request}-v{version}), so "
        "separate runs never share ids; default the seed (the same seed gives the same ids)",
    )
    start: EpochMillis | None = Field(
        default=None,
        description="event time of request 0; default: the run ends now (full speed back-fills the "
        "span before now, a paced run starts early enough to end at the wall clock)",
    )
    duration_s: float = Field(default=3600.0, gt=0)
    rate: float = Field(default=50.0, gt=0, description="requests per simulated second (all models)")
    speed: float | Literal["max"] = Field(default="max", description="simulated s per wall s, or 'max'")
    models: list[ModelSpec] = Field(default_factory=lambda: [ModelSpec(model_id="model-a")], min_length=1)
    label_delay: LabelDelay = LabelDelay()
    label_coverage: float = Field(default=1.0, ge=0, le=1, description="share of predictions labelled")
    malformed_rate: float = Field(default=0.0, ge=0, lt=1, description="malformed share of messages")
    malformed_kinds: list[MalformedKind] = Field(default_factory=lambda: list(MALFORMED_KINDS), min_length=1)
    segments: dict[str, dict[str, float]] = Field(
        default_factory=lambda: {"region": {"eu": 0.5, "us": 0.35, "apac": 0.15}},
        description="segment tag -> value -> weight",
    )

    @model_validator(mode="after")
    def _unique_models(self) -> Scenario:
        ids = [m.model_id for m in self.models]
        if len(set(ids)) != len(ids):
            raise ValueError(f"model ids must be unique: {ids}")
        if isinstance(self.speed, float) and self.speed <= 0:
            raise ValueError("speed must be positive or 'max'")
        return self

    @property
    def n_requests(self) -> int:
        return int(self.duration_s * self.rate)

    @property
    def namespace(self) -> str:
        return self.id_namespace if self.id_namespace is not None else str(self.seed)

    def start_ms(self) -> int:
        """The configured start, else the start that makes the run end now, never in the future:
        at full speed the span ends at the minute now is in; paced at ``speed`` simulated seconds
        per wall second, simulated time catches up with the wall clock at the end of the run."""
        if self.start is not None:
            return self.start
        now = time.time_ns() // 1_000_000
        now -= now % 60_000
        duration_ms = int(self.duration_s * 1000)
        if self.speed == "max":
            return now - duration_ms
        return now - int(duration_ms * max(0.0, 1 - 1 / self.speed))

    def resolved(self) -> Scenario:
        """A copy with ``start`` fixed, so generating twice gives the same event times."""
        return self.model_copy(update={"start": self.start_ms()})

    @classmethod
    def from_file(cls, path: str | Path) -> Scenario:
        """Load a scenario from YAML (.yaml/.yml) or TOML (.toml)."""
        p = Path(path)
        text = p.read_text()
        data = tomllib.loads(text) if p.suffix == ".toml" else yaml.safe_load(text)
        return cls.model_validate(data or {})
