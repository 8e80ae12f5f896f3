"""Strict parameter blocks of ``train_eval`` and ``validate``: one frozen dataclass per block.

Every key of a block must be given in conf (``conf/base/parameters_train_eval.yml``) and no
other key is accepted: a typo or a missing key fails with its name. No default lives here.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, TypeVar

T = TypeVar("T")

SLICE_MODES = ("tumour", "all_thorax")
SPLIT_MODES = ("holdout", "kfold")


def strict(cls: type[T], params: Mapping[str, Any], block: str) -> T:
    """Build dataclass ``cls`` from ``params``; unknown or missing keys raise naming them.

    Parameters
    ----------
    cls : type
        A dataclass.
    params : mapping
        The conf block.
    block : str
        Its name in conf (for the message), e.g. ``"evaluation"``.
    """
    if not isinstance(params, Mapping):
        raise TypeError(f"params:{block} must be a mapping, got {type(params).__name__}")
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(params) - set(names))
    missing = [n for n in names if n not in params]
    if unknown or missing:
        parts = ([f"unknown key(s) {unknown}"] if unknown else []) + ([f"missing key(s) {missing}"] if missing else [])
        raise ValueError(f"params:{block}: {'; '.join(parts)} (accepted: {names})")
    return cls(**{n: params[n] for n in names})


@dataclasses.dataclass(frozen=True)
class SplitParams:
    """``split``: study-level holdout or K-fold cross-validation."""

    mode: str
    seed: int
    test_fraction: float
    n_folds: int
    k: int

    def __post_init__(self) -> None:
        if self.mode not in SPLIT_MODES:
            raise ValueError(f"params:split.mode must be one of {SPLIT_MODES}, got {self.mode!r}")


@dataclasses.dataclass(frozen=True)
class EvaluationParams:
    """``evaluation``: seeds, test slices, statistics, which nets go in which table."""

    device: str
    batch_size: int
    slices: str
    reference: str
    baselines: list
    ablation: list
    primary_endpoint: dict
    power: dict
    alpha: float
    equal_var: bool
    n_bootstrap: int
    bootstrap_seed: int
    confidence: float
    overall_includes_background: bool

    def __post_init__(self) -> None:
        if self.slices not in SLICE_MODES:
            raise ValueError(f"params:evaluation.slices must be one of {SLICE_MODES}, got {self.slices!r}")
        for block, keys in (("primary_endpoint", {"roi", "metric"}), ("power", {"difference", "power"})):
            given = set(getattr(self, block) or {})
            if given != keys:
                raise ValueError(f"params:evaluation.{block} needs exactly the keys {sorted(keys)}, "
                                 f"got {sorted(given)}")


@dataclasses.dataclass(frozen=True)
class ProtocolParams:
    """``protocol``: the nets and the one list of training seeds that train_eval trains and evaluates
    and ``colearn-train`` trains (the first seed is ``training.seed``)."""

    nets: list
    seeds: list
    concurrent: bool
    plan_steps: int
    plan_warmup_steps: int
    nominal_training_slices: int

    def __post_init__(self) -> None:
        if not self.seeds:
            raise ValueError("params:protocol.seeds must list at least one training seed")
        if len(set(self.seeds)) != len(self.seeds):
            raise ValueError(f"params:protocol.seeds has duplicates: {self.seeds}")

    def checked_seeds(self, training_seed: int) -> list[int]:
        """The seeds, after checking that the first is ``training.seed`` (where colearn-train's
        first-seed checkpoints and ``data/06_models/<net>/model.pt`` come from)."""
        if int(self.seeds[0]) != int(training_seed):
            raise ValueError(f"params:protocol.seeds starts with {self.seeds[0]} but training.seed is "
                             f"{training_seed}: list training.seed first")
        return [int(s) for s in self.seeds]


@dataclasses.dataclass(frozen=True)
class SamplingParams:
    """``sampling``: which slices of the training studies a net trains on."""

    tumour_free_share: float
    seed: int

    def __post_init__(self) -> None:
        if not float(self.tumour_free_share) >= 0:
            raise ValueError(f"params:sampling.tumour_free_share must be >= 0, got {self.tumour_free_share}")


@dataclasses.dataclass(frozen=True)
class FigureParams:
    """``figures``: Fig. 5 and Fig. 6."""

    n_slices: int
    pet_cmap: str
    pet_alpha: float
    fusion_columns: int


@dataclasses.dataclass(frozen=True)
class ReportingParams:
    """``reporting``: where the report says the outputs are."""

    folder: str
    mlflow_uri_hint: str


@dataclasses.dataclass(frozen=True)
class ValidationParams:
    """``validation``: the hyper-parameter grid searched on the training folds, per net."""

    last_epochs: int
    score: str
    grid: dict

    def __post_init__(self) -> None:
        allowed = {"learning_rate", "l2_lambda", "baseline_skips"}
        bad = sorted(set(self.grid) - allowed)
        if bad:
            raise ValueError(f"params:validation.grid: unknown key(s) {bad} (accepted: {sorted(allowed)})")
        if self.score not in ("val_accuracy", "val_dice"):
            raise ValueError(f"params:validation.score must be val_accuracy or val_dice, got {self.score!r}")


def net_overrides(overrides: Mapping[str, Any], net: str, partition: int | None = None) -> tuple[dict, dict]:
    """``(model, training)`` overrides of one net (and one outer partition) from ``params:net_overrides``.

    ``net_overrides: {tb: {model: {baseline_skips: true}, training: {learning_rate: 0.05}}}``;
    a net not listed gets none. ``partitions: {1: {training: {...}}, 2: ...}`` (1-based outer
    partitions of a K-fold split, as the nested ``validate`` writes them) override the net's
    keys for that partition only. Only the keys ``model``, ``training`` and ``partitions`` are accepted.
    """
    entry = dict((overrides or {}).get(net) or {})
    unknown = sorted(set(entry) - {"model", "training", "partitions"})
    if unknown:
        raise ValueError(f"params:net_overrides.{net}: unknown key(s) {unknown} "
                         "(accepted: ['model', 'partitions', 'training'])")
    model, training = dict(entry.get("model") or {}), dict(entry.get("training") or {})
    parts = {int(k): v for k, v in (entry.get("partitions") or {}).items()}
    if partition is not None and partition in parts:
        extra = dict(parts[partition] or {})
        bad = sorted(set(extra) - {"model", "training"})
        if bad:
            raise ValueError(f"params:net_overrides.{net}.partitions.{partition}: unknown key(s) {bad} "
                             "(accepted: ['model', 'training'])")
        model.update(extra.get("model") or {})
        training.update(extra.get("training") or {})
    return model, training
