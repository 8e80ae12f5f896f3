"""Strict parameters of the preprocess stages: one frozen dataclass per ``preprocess.<stage>`` block.

A block with an unknown or a missing key fails with that key's name: every default lives in
``conf/base/parameters_preprocess.yml``, none in code. The ground-truth stages (lungs,
mediastinum, tumours) take the keyword parameters of their science function
(:mod:`colearn_pipeline.groundtruth`) as they are, so their keys are checked against that
function's signature, plus ``overrides``: per study (pseudonym) changes of those keywords.
"""

from __future__ import annotations

import dataclasses
import hashlib
import inspect
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from colearn_pipeline.dicom.consistency import DYNAMIC_RULES
from colearn_pipeline.dicom.selection import SelectionRules
from colearn_pipeline.groundtruth import segment_lungs, segment_mediastinum, segment_tumours


#: What the lungs stage does when the lungs reach CT slices the PET does not cover.
COVERAGE_RULES = ("refuse", "crop")


class ParameterError(ValueError):
    """A ``preprocess`` parameter block with an unknown, missing or malformed key."""


def _check_keys(block: Mapping | None, expected: set[str], where: str) -> dict:
    if not isinstance(block, Mapping):
        raise ParameterError(f"{where}: expected a mapping of parameters, got {type(block).__name__}")
    unknown = sorted(set(block) - expected)
    missing = sorted(expected - set(block))
    if unknown:
        raise ParameterError(f"{where}: unknown key(s) {', '.join(f'{where}.{k}' for k in unknown)}")
    if missing:
        raise ParameterError(f"{where}: missing key(s) {', '.join(f'{where}.{k}' for k in missing)}")
    return dict(block)


def build(cls: type, block: Mapping | None, where: str):
    """Build the frozen dataclass ``cls`` from a conf block, refusing unknown or missing keys.

    Parameters
    ----------
    cls : dataclass type
    block : mapping
        The conf block, e.g. ``params:preprocess.suv``.
    where : str
        Its dotted name (``preprocess.suv``), used in messages.
    """
    values = _check_keys(block, {f.name for f in dataclasses.fields(cls)}, where)
    for f in dataclasses.fields(cls):
        if isinstance(values[f.name], list):
            values[f.name] = tuple(values[f.name])
    return cls(**values)


def digest(value: Any) -> str:
    """A short stable hash of JSON-able data (parameters, fingerprints)."""
    text = json.dumps(value, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:24]


@dataclass(frozen=True)
class ExecutorParams:
    """Where the per-study work of every stage runs (``preprocess.executor``)."""

    kind: str                       # "local" (process pool) or "dask"
    workers: int                    # local: processes at a time (0: in this process); dask: LocalCluster size
    threads_per_worker: int         # SimpleITK threads inside a worker
    dask_scheduler: str | None      # address of a running scheduler; null: env var or a LocalCluster
    dask_scheduler_env: str         # environment variable that may hold the scheduler address
    retries: int                    # a study whose worker died is tried again this many times
    staging_dir: str                # parent of the run's staging folder (same disk as the outputs)

    def __post_init__(self) -> None:
        if self.kind not in ("local", "dask"):
            raise ParameterError(f"preprocess.executor.kind: 'local' or 'dask', got {self.kind!r}")
        if int(self.workers) < 0 or int(self.retries) < 0 or int(self.threads_per_worker) < 1:
            raise ParameterError("preprocess.executor: workers and retries >= 0, threads_per_worker >= 1")


@dataclass(frozen=True)
class DiscoverParams:
    """``preprocess.discover_studies``."""

    pseudonym_key: str              # HMAC key of the pseudonyms
    series_selection: Mapping[str, Any]  # every field of SelectionRules (colearn_pipeline.dicom.selection)

    def __post_init__(self) -> None:
        where = "preprocess.discover_studies.series_selection"
        fields = {f.name for f in dataclasses.fields(SelectionRules)}
        values = _check_keys(self.series_selection, fields, where)
        object.__setattr__(self, "series_selection", values)

    def rules(self) -> SelectionRules:
        """The series-selection rules of :func:`colearn_pipeline.dicom.selection.choose_series`."""
        return SelectionRules.from_mapping(dict(self.series_selection))


@dataclass(frozen=True)
class ReadSeriesParams:
    """``preprocess.read_series``: checks of :func:`colearn_pipeline.dicom.series.read_series`."""

    orientation_tolerance: float
    duplicate_tolerance_mm: float
    spacing_relative_tolerance: float
    inplane_tolerance_mm: float
    padding_value: float | None     # value of PixelPaddingValue pixels; null: air (-1000 HU) for CT, 0 for PET
    dynamic_pet: str                # several frames per position: refuse | nearest_uptake_time
    uptake_time_min: float          # the standard uptake time (minutes after injection) for nearest_uptake_time

    def __post_init__(self) -> None:
        if self.dynamic_pet not in DYNAMIC_RULES:
            raise ParameterError(f"preprocess.read_series.dynamic_pet: one of {', '.join(DYNAMIC_RULES)}, "
                                 f"got {self.dynamic_pet!r}")


@dataclass(frozen=True)
class SuvParams:
    """``preprocess.suv``."""

    suv_type: str                   # bw (the paper), lbm, bsa, ibw


@dataclass(frozen=True)
class PetToCtParams:
    """``preprocess.pet_to_ct``: PET SUV resampled onto the CT grid in physical space."""

    interpolator: str
    outside_value: float


@dataclass(frozen=True)
class PhantomQaParams:
    """``preprocess.phantom_qa``: comparison with the phantom's truth (never used to derive anything)."""

    truth_dir: str | None           # phantom_truth/<pseudonym>; ignored when absent
    min_suv: float                  # SUV error over voxels whose true SUV exceeds this
    max_suv_rel_error: float        # a larger largest relative SUV error sets the study aside


@dataclass(frozen=True)
class ModelInputParams:
    """``preprocess.model_input``: slice selection and the model's arrays."""

    model_size: tuple[int, int]
    compress: bool
    slice_classes: tuple[str, ...]
    slice_min_voxels: int
    include_tumours_unlabelled: bool            # a study without report gets a model input too
    unlabelled_slice_classes: tuple[str, ...]   # ... of these slices (it has no tumour label)


@dataclass(frozen=True)
class QualityParams:
    """``preprocess.quality``: ranges of the ground truth's quality figures; outside: "needs review"."""

    hull_margin_mm: float                   # growth of the lungs' per-slice convex hull
    lung_ml: tuple[float, float]
    mediastinum_ml: tuple[float, float]
    max_mediastinum_outside_hull: float     # fraction of mediastinum voxels outside the grown hull
    min_lung_balance: float                 # smaller lung over larger
    max_tumour_ml: float                    # per finding
    min_peak_to_threshold: float            # per finding: below it, no uptake above background
    capped_is_review: bool                  # a tumour region that hits its size cap needs review
    aerated_lung_hu: float                  # CT below this is aerated lung
    max_tumour_in_aerated_lung_ml: float    # tumour volume at aerated-lung HU (a region spilling into lung)

    def __post_init__(self) -> None:
        for name in ("lung_ml", "mediastinum_ml"):
            low, high = getattr(self, name)
            if not 0 <= low < high:
                raise ParameterError(f"preprocess.quality.{name}: [low, high] with 0 <= low < high")

    def ranges(self) -> dict[str, Any]:
        """The ranges as :func:`colearn_pipeline.groundtruth.quality.review_reasons` takes them."""
        values = dataclasses.asdict(self)
        values.pop("hull_margin_mm")
        values.pop("aerated_lung_hu")
        return values


@dataclass(frozen=True)
class ThoraxParams:
    """``preprocess.thorax``: a study that is not a thorax is quarantined (:func:`~colearn_pipeline.groundtruth.quality.thorax_check`)."""

    min_lung_ml: float
    min_mediastinum_ml: float
    min_lung_balance: float
    thorax_body_parts: tuple[str, ...]      # BodyPartExamined values compatible with a thorax


@dataclass(frozen=True)
class ThoraxExtentParams:
    """``preprocess.thorax_extent``: the slab where ground truth is derived (:func:`~colearn_pipeline.groundtruth.thorax.thorax_extent`)."""

    min_lung_area_mm2: float                # a slice with less lung than this (mm²) is not thorax
    margin_mm: float                        # added above and below the lungs
    outside_pet: str                        # lungs reaching CT slices without PET: refuse | crop (to the PET)

    def __post_init__(self) -> None:
        if self.outside_pet not in COVERAGE_RULES:
            raise ParameterError(f"preprocess.thorax_extent.outside_pet: one of {', '.join(COVERAGE_RULES)}, "
                                 f"got {self.outside_pet!r}")

    def extent(self) -> dict[str, float]:
        """The keywords of :func:`~colearn_pipeline.groundtruth.thorax.thorax_extent`."""
        return {"min_lung_area_mm2": self.min_lung_area_mm2, "margin_mm": self.margin_mm}


@dataclass(frozen=True)
class LabelsParams:
    """``preprocess.labels``: where corrected label maps replace the derived ground truth."""

    corrections_dir: str | None             # <pseudonym>.nii.gz | <pseudonym>.nii | <pseudonym>.dcm | <pseudonym>/
    expert: Mapping[str, Any]               # ExpertParams: RTSTRUCT / SEG beside the images as ground truth


@dataclass(frozen=True)
class ExpertParams:
    """``preprocess.labels.expert``: expert contours (RTSTRUCT or DICOM SEG beside the images) as ground truth."""

    enabled: bool
    slice_tolerance_fraction: float         # a contour within this fraction of the slice spacing lies on the slice
    roi_classes: tuple[tuple[str, str], ...]  # [glob pattern (case-insensitive), lung | mediastinum | tumour | ignore]
    overrides: Mapping[str, tuple[tuple[str, str], ...]]  # per study (pseudonym): its own roi_classes

    def rules_for(self, pseudonym: str) -> dict[str, str]:
        """The ROI-name rules of one study (its override, else the cohort's), checked."""
        from colearn_pipeline.groundtruth.expert import check_rules

        try:
            return check_rules(self.overrides.get(pseudonym, self.roi_classes))
        except ValueError as exc:
            raise ParameterError(f"preprocess.labels.expert: {exc}") from None


@dataclass(frozen=True)
class ManifestParams:
    """``preprocess.manifest``."""

    max_quarantined_fraction: float  # a louder warning above this fraction of quarantined studies


#: Ground-truth stage -> its science function.
GROUNDTRUTH_FUNCTIONS: dict[str, Callable] = {
    "lungs": segment_lungs,
    "mediastinum": segment_mediastinum,
    "tumours": segment_tumours,
}
#: Keywords of the science functions that are data, not parameters.
_DATA_KEYWORDS = {"return_info", "seeds_zyx", "airway_mask", "allowed_mask", "sizes_mm"}


def groundtruth_keywords(stage: str) -> set[str]:
    """The tunable keyword parameters of a ground-truth stage's function."""
    sig = inspect.signature(GROUNDTRUTH_FUNCTIONS[stage])
    return {n for n, p in sig.parameters.items() if p.kind is p.KEYWORD_ONLY and n not in _DATA_KEYWORDS}


@dataclass(frozen=True)
class GroundTruthParams:
    """``preprocess.<lungs|mediastinum|tumours>``: keywords of the science function, and per-study overrides."""

    stage: str
    keywords: Mapping[str, Any]
    overrides: Mapping[str, Mapping[str, Any]]

    @classmethod
    def from_conf(cls, stage: str, block: Mapping | None) -> GroundTruthParams:
        where = f"preprocess.{stage}"
        expected = groundtruth_keywords(stage)
        values = _check_keys(block, expected | {"overrides"}, where)
        overrides = dict(values.pop("overrides") or {})
        for pseudonym, change in overrides.items():
            if not isinstance(change, Mapping):
                raise ParameterError(f"{where}.overrides.{pseudonym}: expected a mapping")
            unknown = sorted(set(change) - expected)
            if unknown:
                raise ParameterError(f"{where}.overrides.{pseudonym}: unknown key(s) {', '.join(unknown)}")
        return cls(stage, MappingProxyType(values), MappingProxyType({k: dict(v) for k, v in overrides.items()}))

    def for_study(self, pseudonym: str) -> dict[str, Any]:
        """The keywords for one study: the block with that study's overrides applied."""
        return {**self.keywords, **self.overrides.get(pseudonym, {})}
