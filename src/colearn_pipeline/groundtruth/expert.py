"""Expert contours as ground truth: an RTSTRUCT or a DICOM SEG beside the images, on the CT grid.

- :func:`find_expert_objects`: among a study's non-image files, the RT Structure Sets and
  Segmentations made on its CT: those that reference the CT series first, else those on the CT's
  frame of reference.
- :func:`roi_class`: ROI (segment) names -> the four classes by ordered glob rules
  (case-insensitive, first match wins; class ``ignore`` drops a name on purpose; a name no rule
  matches is *unmapped* and listed).
- :func:`expert_masks`: one bool mask per class on the CT grid (RTSTRUCT rasterised by
  :func:`colearn_pipeline.dicom.rtstruct.rasterise_contours`, SEG read with highdicom).
- :func:`merge_with_derived`: the label map where the expert's classes replace the derived ones
  and the classes the expert did not contour stay derived.

docs/groundtruth.md, "Expert contours".
"""

from __future__ import annotations

import fnmatch
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pydicom
from pydicom.dataset import Dataset

from colearn_pipeline.dicom.rtstruct import (
    DEFAULT_TOLERANCE_FRACTION,
    RT_STRUCTURE_SET_STORAGE,
    RtStructError,
    SliceGeometry,
    rasterise_contours,
    read_structure_set,
    referenced_uids,
)
from colearn_pipeline.groundtruth.labels import LABELS, compose_labels

#: SOP class of Segmentation Storage.
SEGMENTATION_STORAGE = "1.2.840.10008.5.1.4.1.1.66.4"
#: The classes an ROI can map to; ``ignore`` drops it on purpose (not listed as unmapped).
IGNORE = "ignore"
EXPERT_CLASSES = ("lung", "mediastinum", "tumour")
#: How an expert object is tied to the CT: it references the CT series, or only its frame of reference.
MATCH_SERIES, MATCH_FRAME = "series", "frame_of_reference"


class ExpertContourError(ValueError):
    """Expert contours that cannot be used; names the file (label) and the problem."""

    def __init__(self, file: str, problem: str) -> None:
        self.file, self.problem = file, problem
        super().__init__(f"{file}: {problem}")


@dataclass(frozen=True)
class ExpertObject:
    """An RTSTRUCT or SEG found beside a study's images."""

    path: str
    kind: str  # "RTSTRUCT" or "SEG"
    match: str  # MATCH_SERIES or MATCH_FRAME


@dataclass
class ExpertLabels:
    """The expert's class masks on the CT grid and what was made of each ROI.

    Attributes
    ----------
    masks : dict of str to numpy.ndarray
        Class name -> bool ``(z, y, x)``, for the classes at least one non-empty ROI mapped to.
    rois : list of dict
        ``{"name", "class", "voxels"}`` per ROI (``class`` None when unmapped).
    unmapped : list of str
        ROI names no rule matched.
    notes : list of str
        Contours not drawn (off the grid, not in a slice plane, not closed planar).
    """

    masks: dict[str, np.ndarray] = field(default_factory=dict)
    rois: list[dict[str, Any]] = field(default_factory=list)
    unmapped: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def check_rules(rules: Mapping[str, str] | Sequence[Sequence[str]]) -> dict[str, str]:
    """The rules as an ordered dict glob pattern -> class, from ``[[pattern, class], ...]`` (conf) or a mapping.

    Raises
    ------
    ValueError
        A rule that is not a pair, or a class not in ``lung``, ``mediastinum``, ``tumour``, ``ignore``.
    """
    pairs = list(rules.items()) if isinstance(rules, Mapping) else list(rules or [])
    out = {}
    for rule in pairs:
        if isinstance(rule, (str, bytes)) or len(rule) != 2:
            raise ValueError(f"expert ROI rule {rule!r} is not a [pattern, class] pair")
        pattern, cls = (str(v) for v in rule)
        if cls not in (*EXPERT_CLASSES, IGNORE):
            raise ValueError(f"expert ROI rule {pattern!r}: class {cls!r} is not one of {[*EXPERT_CLASSES, IGNORE]}")
        out[pattern] = cls
    return out


def roi_class(name: str, rules: Mapping[str, str]) -> str | None:
    """The class of an ROI name: the first rule whose glob pattern matches (case-insensitive), else None."""
    folded = name.strip().casefold()
    for pattern, cls in rules.items():
        if fnmatch.fnmatchcase(folded, pattern.casefold()):
            return cls
    return None


def _header(path: str) -> Dataset | None:
    try:
        return pydicom.dcmread(path, stop_before_pixels=True)
    except Exception:  # noqa: BLE001 - not DICOM, or damaged: discovery has already listed it
        return None


def _seg_references(ds: Dataset) -> tuple[set[str], set[str]]:
    series = {str(s.get("SeriesInstanceUID", "")) for s in ds.get("ReferencedSeriesSequence", [])}
    return series, {str(ds.get("FrameOfReferenceUID", ""))}


def find_expert_objects(paths: Sequence[str], ct_series_uid: str, frame_of_reference_uid: str) -> list[ExpertObject]:
    """The RTSTRUCTs and SEGs among ``paths`` made on the CT: those referencing its series, else its frame.

    Parameters
    ----------
    paths : sequence of str
        The study's files that are not image slices (what discovery set aside).
    ct_series_uid, frame_of_reference_uid : str
        Of the CT series chosen for the study.

    Returns
    -------
    list of ExpertObject
        Sorted by path; all with ``match`` ``"series"`` when any references the CT series.
    """
    found = []
    for path in sorted(paths):
        ds = _header(path)
        if ds is None:
            continue
        sop = str(ds.get("SOPClassUID", ""))
        if sop == RT_STRUCTURE_SET_STORAGE:  # its references only: a damaged contour is the labels stage's error
            kind = "RTSTRUCT"
            frame_uids, series_uids = referenced_uids(ds)
            series, frames = set(series_uids), set(frame_uids)
        elif sop == SEGMENTATION_STORAGE:
            kind = "SEG"
            series, frames = _seg_references(ds)
        else:
            continue
        if ct_series_uid in series:
            found.append(ExpertObject(path, kind, MATCH_SERIES))
        elif frame_of_reference_uid in frames:
            found.append(ExpertObject(path, kind, MATCH_FRAME))
    if any(o.match == MATCH_SERIES for o in found):
        found = [o for o in found if o.match == MATCH_SERIES]
    return found


def _add_roi(out: ExpertLabels, name: str, mask: np.ndarray, rules: Mapping[str, str]) -> None:
    cls = roi_class(name, rules)
    voxels = int(np.count_nonzero(mask))
    out.rois.append({"name": name, "class": cls, "voxels": voxels})
    if cls is None:
        out.unmapped.append(name)
    elif cls != IGNORE and voxels:
        out.masks[cls] = out.masks[cls] | mask if cls in out.masks else mask


def _rtstruct_masks(out: ExpertLabels, path: str, file: str, geometry: SliceGeometry, rules: Mapping[str, str],
                    tolerance_fraction: float) -> None:
    try:
        structure_set = read_structure_set(path, file)
    except RtStructError as exc:
        raise ExpertContourError(exc.file, exc.problem) from None
    if structure_set.skipped_contours:
        out.notes.append(f"{file}: {structure_set.skipped_contours} contours not CLOSED_PLANAR, left out")
    for roi in structure_set.rois:
        if not roi.contours:
            continue  # an ROI without contours (an empty clutter structure set has none)
        mask, info = rasterise_contours(roi.contours, geometry, tolerance_fraction=tolerance_fraction)
        lost = info["contours_off_grid"] + info["contours_not_in_slice_plane"]
        if lost:
            out.notes.append(f"{file}: ROI {roi.number}: {lost} of {info['contours']} contours match no CT slice")
        _add_roi(out, roi.name, mask, rules)


def _segment_name(item: Dataset) -> str:
    label = str(item.get("SegmentLabel", "") or "").strip()
    if label:
        return label
    codes = item.get("SegmentedPropertyTypeCodeSequence") or []
    return str(codes[0].get("CodeMeaning", "")) if codes else f"segment {item.SegmentNumber}"


def _seg_masks(out: ExpertLabels, path: str, file: str, geometry: SliceGeometry, rules: Mapping[str, str]) -> None:
    import highdicom as hd

    try:
        seg = hd.seg.segread(path)
    except Exception as exc:  # noqa: BLE001 - highdicom / pydicom raise many types for a damaged file
        raise ExpertContourError(file, f"unreadable DICOM SEG ({type(exc).__name__})") from None
    if (int(seg.Rows), int(seg.Columns)) != (geometry.rows, geometry.columns):
        raise ExpertContourError(file, f"frames {seg.Rows}x{seg.Columns} != CT {geometry.rows}x{geometry.columns}")
    referenced = {str(u[2]) for u in seg.get_source_image_uids()}
    slices = [k for k, uid in enumerate(geometry.sop_instance_uids) if uid in referenced]
    if not slices:
        raise ExpertContourError(file, "its frames reference no slice of the CT series")
    numbers = [int(item.SegmentNumber) for item in seg.SegmentSequence]
    pixels = seg.get_pixels_by_source_instance([geometry.sop_instance_uids[k] for k in slices],
                                               segment_numbers=numbers, assert_missing_frames_are_empty=True)
    for j, item in enumerate(seg.SegmentSequence):
        mask = np.zeros(geometry.shape_zyx, bool)
        mask[slices] = pixels[..., j] > 0
        _add_roi(out, _segment_name(item), mask, rules)


def expert_masks(objects: Sequence[ExpertObject], ct_datasets: Sequence[Dataset], rules: Mapping[str, str], *,
                 labels_of: Mapping[str, str] | None = None,
                 tolerance_fraction: float = DEFAULT_TOLERANCE_FRACTION) -> ExpertLabels:
    """The expert's class masks on the CT grid from RTSTRUCTs and SEGs (ROIs of one class are united).

    Parameters
    ----------
    objects : sequence of ExpertObject
    ct_datasets : sequence of pydicom.Dataset
        The CT headers in slice order (``SeriesVolume.datasets``).
    rules : mapping
        Glob pattern -> class (:func:`check_rules`), in order.
    labels_of : mapping, optional
        Path -> file label for messages (default: the file's base name).
    tolerance_fraction : float
        Contours within this fraction of the slice spacing of a CT slice are drawn on it.

    Raises
    ------
    ExpertContourError
        An unreadable object, or a SEG on another grid.
    """
    geometry = SliceGeometry.from_datasets(ct_datasets)
    out = ExpertLabels()
    for obj in objects:
        file = (labels_of or {}).get(obj.path, os.path.basename(obj.path))
        if obj.kind == "RTSTRUCT":
            _rtstruct_masks(out, obj.path, file, geometry, rules, tolerance_fraction)
        else:
            _seg_masks(out, obj.path, file, geometry, rules)
    return out


def merge_with_derived(derived: np.ndarray | None, masks: Mapping[str, np.ndarray]) -> tuple[np.ndarray, list[str]]:
    """The label map with the expert's classes; the classes the expert did not contour come from ``derived``.

    A derived lung or mediastinum is kept only outside every expert mask (the expert's outline wins,
    e.g. consolidated lung the derived rules gave to the mediastinum); a derived tumour is kept
    whole. The classes are then composed as always, tumour > mediastinum > lung
    (:func:`~colearn_pipeline.groundtruth.compose_labels`).

    Returns
    -------
    labels : numpy.ndarray
        uint8 ``(z, y, x)``.
    from_derived : list of str
        The classes taken from ``derived`` (empty when ``derived`` is None).
    """
    if not masks:
        raise ValueError("no expert class to merge")
    shape = next(iter(masks.values())).shape
    if derived is not None and derived.shape != shape:
        raise ValueError(f"derived labels {derived.shape} != expert grid {shape}")
    outside_expert = ~np.logical_or.reduce([np.asarray(m, bool) for m in masks.values()])
    from_derived = [] if derived is None else [c for c in EXPERT_CLASSES if c not in masks]
    chosen = []
    for name in EXPERT_CLASSES:
        if name in masks:
            chosen.append(np.asarray(masks[name], bool))
        elif name in from_derived:
            mine = np.asarray(derived) == LABELS[name]
            chosen.append(mine if name == "tumour" else mine & outside_expert)
        else:
            chosen.append(np.zeros(shape, bool))
    return compose_labels(*chosen), from_derived
