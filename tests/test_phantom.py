"""Tests of the phantom PET-CT cohort generator (issue 2, "Done when")."""

from __future__ import annotations

import datetime as dt
import json
import math
from collections import defaultdict
from pathlib import Path

import numpy as np
from scipy import ndimage
import pydicom
import pytest
import SimpleITK as sitk

from colearn_pipeline.dicom.pseudonym import pseudonymise
from colearn_pipeline.phantom import CONVENTIONS, generate_cohort, generate_study, make_config
from colearn_pipeline.phantom import config as C
from colearn_pipeline.phantom.anatomy import rasterise, sample_anatomy
from colearn_pipeline.phantom.generate import study_streams
from colearn_pipeline.phantom.geometry import Grid
from colearn_pipeline.phantom.imaging import labels_from_tissue

SEED = 7
N_STUDIES = len(CONVENTIONS)          # one study per vendor / time convention
CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
PET_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.128"
SUV_TOLERANCE = 0.01
SUV_MIN = 0.5
LABEL_LUNG, LABEL_MEDIASTINUM, LABEL_TUMOUR = 1, 2, 3


@pytest.fixture(scope="module")
def cohort(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("phantom")
    generate_cohort(out, n_studies=N_STUDIES, seed=SEED, size="tiny", workers=1)
    return out


def _summary(cohort: Path) -> dict:
    return json.loads((cohort / "phantom_cohort.json").read_text())


def _study_json(cohort: Path, s: dict) -> dict:
    return json.loads((cohort / s["truth_dir"] / "study.json").read_text())


def _series(cohort: Path, s: dict) -> dict[str, list[pydicom.Dataset]]:
    """Datasets of one study grouped by SeriesInstanceUID, sorted along the slice normal."""
    by_uid: dict[str, list] = defaultdict(list)
    for p in (cohort / s["dicom_dir"]).rglob("*"):
        if p.is_file() and not p.name.startswith("."):
            ds = pydicom.dcmread(p)
            by_uid[ds.SeriesInstanceUID].append((p, ds))
    out = {}
    for uid, items in by_uid.items():
        items.sort(key=lambda t: float(t[1].ImagePositionPatient[2]))
        out[uid] = items
    return out


def _tm_seconds(date: str, time: str) -> dt.datetime:
    return dt.datetime.strptime(date + time[:6], "%Y%m%d%H%M%S")


def textbook_suv(ds: pydicom.Dataset) -> np.ndarray:
    """Body-weight SUV of one PET slice from its own header (textbook formula, per vendor convention).

    SUV = activity concentration (Bq/ml) * weight (g) / dose decayed to the reference time (Bq).
    """
    stored = ds.pixel_array.astype(np.float64)
    value = stored * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
    if ds.Units == "CNTS":
        # Philips: the private SUV scale factor turns counts into SUV directly
        return value * float(ds[0x7053, 0x1000].value)
    assert ds.Units == "BQML"
    item = ds.RadiopharmaceuticalInformationSequence[0]
    weight_g = float(ds.PatientWeight) * 1000.0
    dose_bq = float(item.RadionuclideTotalDose)
    half_life_s = float(item.RadionuclideHalfLife)
    if "RadiopharmaceuticalStartDateTime" in item:
        injection = dt.datetime.strptime(str(item.RadiopharmaceuticalStartDateTime)[:14], "%Y%m%d%H%M%S")
    else:
        injection = _tm_seconds(ds.SeriesDate, str(item.RadiopharmaceuticalStartTime))
    if ds.DecayCorrection == "ADMIN":
        decayed = dose_bq
    else:
        assert ds.DecayCorrection == "START"
        start = _tm_seconds(ds.SeriesDate, ds.SeriesTime)
        decayed = dose_bq * math.exp(-math.log(2) * (start - injection).total_seconds() / half_life_s)
    return value * weight_g / decayed


def test_cohort_layout_and_summary(cohort):
    summary = _summary(cohort)
    assert summary["n_studies"] == N_STUDIES
    assert sorted(summary["conventions"]) == sorted(CONVENTIONS)
    for s in summary["studies"]:
        truth = cohort / s["truth_dir"]
        assert {p.name for p in truth.iterdir()} == {"labels.nii.gz", "suv.nii.gz", "study.json"}
        report = json.loads((cohort / s["report"]).read_text())
        assert pseudonymise(report["study_instance_uid"]) == s["pseudonym"] == truth.name
        assert 1 <= len(report["findings"]) <= 7
        for f in report["findings"]:
            assert f["kind"] in {"primary", "node"}
            assert f["text"].startswith("primary tumour, ") or f["text"].startswith("node, station ")
    # no study name leaks a patient identifier into file names
    names = {p.name for p in cohort.rglob("*")}
    for s in summary["studies"]:
        for items in _series(cohort, s).values():
            ds = items[0][1]
            assert all(str(ds.PatientID) not in n and str(ds.PatientName).split("^")[0] not in n for n in names)


def test_series_read_back_with_pydicom_and_simpleitk(cohort):
    for s in _summary(cohort)["studies"]:
        study = _study_json(cohort, s)
        series = _series(cohort, s)
        assert len(series) == 2, f"{s['pseudonym']}: expected one CT and one PET series"
        frames = {items[0][1].FrameOfReferenceUID for items in series.values()}
        assert len(frames) == 1
        for uid, items in series.items():
            ds0 = items[0][1]
            modality = ds0.Modality
            grid = study["ct_grid"] if modality == "CT" else study["pet_grid"]
            assert ds0.SOPClassUID == (CT_IMAGE_STORAGE if modality == "CT" else PET_IMAGE_STORAGE)
            assert ds0.file_meta.MediaStorageSOPClassUID == ds0.SOPClassUID
            assert len(items) == grid["shape_zyx"][0]
            assert len({d.SOPInstanceUID for _, d in items}) == len(items)
            z = np.array([float(d.ImagePositionPatient[2]) for _, d in items])
            np.testing.assert_allclose(np.diff(z), grid["spacing_xyz_mm"][2], atol=1e-3)
            assert [float(v) for v in ds0.ImagePositionPatient] == pytest.approx(grid["origin_xyz_mm"], abs=1e-3)
            assert [float(v) for v in ds0.PixelSpacing] == pytest.approx(grid["spacing_xyz_mm"][1::-1], abs=1e-6)
            assert (ds0.Rows, ds0.Columns) == tuple(grid["shape_zyx"][1:])
            # the file names are not in slice order
            names = [p.name for p, _ in items]
            assert names != sorted(names)
            # SimpleITK reads the same series as one volume with the same geometry and values
            folder = str(items[0][0].parent)
            files = sitk.ImageSeriesReader.GetGDCMSeriesFileNames(folder, uid)
            assert len(files) == len(items)
            img = sitk.ImageSeriesReader()
            img.SetFileNames(files)
            vol = img.Execute()
            assert vol.GetSize() == tuple(grid["shape_zyx"][::-1])
            assert vol.GetSpacing() == pytest.approx(grid["spacing_xyz_mm"], abs=1e-4)
            assert vol.GetOrigin() == pytest.approx(grid["origin_xyz_mm"], abs=1e-3)
            assert vol.GetDirection() == pytest.approx((1, 0, 0, 0, 1, 0, 0, 0, 1))
            arr = sitk.GetArrayFromImage(vol).astype(np.float64)
            ref = np.stack([d.pixel_array * float(d.RescaleSlope) + float(d.RescaleIntercept) for _, d in items])
            np.testing.assert_allclose(arr, ref, rtol=1e-5, atol=1e-3 * max(1.0, float(np.abs(ref).max())))
            if modality == "CT":
                assert ds0.RescaleType == "HU" and -1024 <= ref.min() and ref.max() <= 3071
                assert ref.min() < -900 and ref.max() > 300       # air/lung and bone present
        # truth NIfTI geometry matches the DICOM series
        labels = sitk.ReadImage(str(cohort / s["truth_dir"] / "labels.nii.gz"))
        assert labels.GetSize() == tuple(study["ct_grid"]["shape_zyx"][::-1])
        assert labels.GetOrigin() == pytest.approx(study["ct_grid"]["origin_xyz_mm"], abs=1e-3)
        suv = sitk.ReadImage(str(cohort / s["truth_dir"] / "suv.nii.gz"))
        assert suv.GetSize() == tuple(study["pet_grid"]["shape_zyx"][::-1])
        assert suv.GetSpacing() == pytest.approx(study["pet_grid"]["spacing_xyz_mm"], abs=1e-4)


def test_pet_header_textbook_suv_matches_truth_for_every_convention(cohort):
    seen = set()
    for s in _summary(cohort)["studies"]:
        study = _study_json(cohort, s)
        truth = sitk.GetArrayFromImage(sitk.ReadImage(str(cohort / s["truth_dir"] / "suv.nii.gz")))
        pet = [items for items in _series(cohort, s).values() if items[0][1].Modality == "PT"][0]
        ds0 = pet[0][1]
        assert ds0.Units == study["units"] and ds0.DecayCorrection == study["decay_correction"]
        assert "DECY" in ds0.CorrectedImage and "ATTN" in ds0.CorrectedImage
        item = ds0.RadiopharmaceuticalInformationSequence[0]
        assert float(item.RadionuclideHalfLife) == pytest.approx(6586.2)
        assert ("RadiopharmaceuticalStartDateTime" in item) == (study["radiopharmaceutical_time"] == "datetime")
        assert ds0.pixel_array.dtype == np.int16
        slopes = {float(d.RescaleSlope) for _, d in pet}
        assert len(slopes) > 1                                      # per-slice RescaleSlope
        if ds0.Units == "CNTS":
            assert ds0[0x7053, 0x0010].value == "Philips PET Private Group"
            assert float(ds0[0x7053, 0x1009].value) > 0
        suv = np.stack([textbook_suv(d) for _, d in pet])
        mask = truth > SUV_MIN
        assert mask.sum() > 100
        rel = np.abs(suv[mask] - truth[mask]) / truth[mask]
        assert rel.max() < SUV_TOLERANCE, f"{s['convention']}: max relative SUV error {rel.max():.4f}"
        seen.add(s["convention"])
    assert seen == set(CONVENTIONS)


def test_same_seed_gives_identical_pixels_and_uids(tmp_path):
    a = generate_study(tmp_path / "a", index=3, seed=11, size="tiny")
    b = generate_study(tmp_path / "b", index=3, seed=11, size="tiny")
    c = generate_study(tmp_path / "c", index=3, seed=12, size="tiny")
    assert a["pseudonym"] == b["pseudonym"] != c["pseudonym"]

    def pixels(root: Path, s: dict) -> dict:
        out = {}
        for items in _series(root, s).values():
            for _, d in items:
                out[(d.Modality, d.InstanceNumber)] = (d.PixelData, d.SOPInstanceUID, str(d.RescaleSlope))
        return out

    pa, pb, pc = pixels(tmp_path / "a", a), pixels(tmp_path / "b", b), pixels(tmp_path / "c", c)
    assert pa == pb
    assert pa.keys() != pc.keys() or any(pa[k][0] != pc[k][0] for k in pa)
    for name in ("labels.nii.gz", "suv.nii.gz"):
        va = sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "a" / a["truth_dir"] / name)))
        vb = sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "b" / b["truth_dir"] / name)))
        assert np.array_equal(va, vb)


def test_report_positions_fall_inside_their_lesions(cohort):
    n_primary = n_node = 0
    for s in _summary(cohort)["studies"]:
        study = _study_json(cohort, s)
        labels_img = sitk.ReadImage(str(cohort / s["truth_dir"] / "labels.nii.gz"))
        labels = sitk.GetArrayFromImage(labels_img)
        report = json.loads((cohort / s["report"]).read_text())
        assert len(report["findings"]) == len(study["lesions"])
        for f in report["findings"]:
            idx = labels_img.TransformPhysicalPointToIndex(tuple(f["position_mm"]))
            assert labels[idx[2], idx[1], idx[0]] == 3, f"{s['pseudonym']}: {f['text']} not in a tumour voxel"
            n_primary += f["kind"] == "primary"
            n_node += f["kind"] == "node"
        assert (labels == 3).any() and (labels == 1).any() and (labels == 2).any()
    assert n_primary >= N_STUDIES and n_node >= 1


#: Measured lesion contrast the phantom promises: peak SUV >= this times the local background.
MIN_LESION_CONTRAST = 3.0
#: The background of a lesion: its host tissue (lung for primaries, mediastinum for nodes) in a
#: shell this far (mm) beyond the lesion's edge.
BACKGROUND_SHELL_MM = (10.0, 30.0)


def _pet_suv_image(cohort: Path, s: dict) -> sitk.Image:
    """The written PET series read back as SUV from its own headers (:func:`textbook_suv`), on its grid."""
    pet = [items for items in _series(cohort, s).values() if items[0][1].Modality == "PT" and len(items) > 1][0]
    first, second = pet[0][1], pet[1][1]
    image = sitk.GetImageFromArray(np.stack([textbook_suv(d) for _, d in pet]))
    image.SetSpacing((float(first.PixelSpacing[1]), float(first.PixelSpacing[0]),
                      float(second.ImagePositionPatient[2]) - float(first.ImagePositionPatient[2])))
    image.SetOrigin(tuple(float(v) for v in first.ImagePositionPatient))
    return image


def test_lesions_stand_out_from_their_surroundings_in_pet(cohort):
    """Measured in the written PET: each lesion's peak SUV is >= 3x the median SUV of its host tissue
    (truth labels) 10-30 mm beyond its edge."""
    n = 0
    for s in _summary(cohort)["studies"]:
        study = _study_json(cohort, s)
        suv_img = _pet_suv_image(cohort, s)
        suv = sitk.GetArrayFromImage(suv_img)
        truth = sitk.ReadImage(str(cohort / s["truth_dir"] / "labels.nii.gz"))
        labels = sitk.GetArrayFromImage(sitk.Resample(truth, suv_img, sitk.Transform(), sitk.sitkNearestNeighbor, 0))
        zyx = np.indices(suv.shape).reshape(3, -1).T
        spacing_zyx = np.array(suv_img.GetSpacing())[::-1]
        for les in study["lesions"]:
            centre = np.array(suv_img.TransformPhysicalPointToIndex(tuple(les["position_mm"]))[::-1])
            dist_mm = np.linalg.norm((zyx - centre) * spacing_zyx, axis=1).reshape(suv.shape)
            radius = 0.5 * les["diameter_mm"]
            peak = suv[dist_mm <= radius].max()
            host = LABEL_LUNG if les["kind"] == "primary" else LABEL_MEDIASTINUM
            shell = (dist_mm > radius + BACKGROUND_SHELL_MM[0]) & (dist_mm <= radius + BACKGROUND_SHELL_MM[1])
            background = np.median(suv[shell & (labels == host)])
            assert (shell & (labels == host)).sum() >= 10, (s["pseudonym"], les["text"])
            assert peak >= MIN_LESION_CONTRAST * background, (s["pseudonym"], les["text"], peak, background)
            n += 1
    assert n >= N_STUDIES


def test_lesions_keep_away_from_the_myocardium(cohort):
    """Measured on the CT grid: no tumour voxel of the truth labels lies within the configured margin
    of the myocardium of the study's anatomy (rebuilt from the study's anatomy stream)."""
    from colearn_pipeline.phantom.generate import _sample_grids, _sample_patient

    cfg = make_config("tiny")
    for s in _summary(cohort)["studies"]:
        streams = study_streams(SEED, s["index"])
        _, weight_kg, height_m = _sample_patient(streams["patient"], cfg)
        grid, _, (z0, z1) = _sample_grids(streams["patient"], cfg.geometry)
        tissue = rasterise(sample_anatomy(streams["anatomy"], z0, z1, weight_kg, height_m), grid)
        labels = sitk.GetArrayFromImage(sitk.ReadImage(str(cohort / s["truth_dir"] / "labels.nii.gz")))
        assert labels.shape == tissue.shape and (tissue == C.MYOCARDIUM).any()
        to_myocardium_mm = ndimage.distance_transform_edt(tissue != C.MYOCARDIUM, sampling=grid.spacing_xyz_mm[::-1])
        assert to_myocardium_mm[labels == LABEL_TUMOUR].min() >= cfg.myocardium_margin_mm, s["pseudonym"]


def test_airways_are_mediastinum_not_lung_and_labels_follow_tissue():
    grid = Grid((20, 96, 96), (5.2, 5.2, 12.0), (-247.0, -247.0, -330.0))
    rng = study_streams(5, 0)["anatomy"]
    anat = sample_anatomy(rng, -330.0, -330.0 + 19 * 12.0, 80.0, 1.75)
    tissue = rasterise(anat, grid)
    labels = labels_from_tissue(tissue)
    assert (tissue == C.AIRWAY).any() and (labels[tissue == C.AIRWAY] == 2).all()
    assert (labels[tissue == C.MYOCARDIUM] == 2).all()
    assert (labels[np.isin(tissue, (C.CORTEX, C.MARROW, C.TABLE_SHELL, C.FAT, C.MUSCLE))] == 0).all()
    assert (labels[tissue == C.LUNG] == 1).all()


def test_anatomy_that_broke_the_fat_window_mediastinum_is_present():
    """Issue 12: fat planes, diaphragm, stomach with gas and spleen under the domes, heart on the diaphragm."""
    grid = Grid((40, 96, 96), (5.2, 5.2, 6.0), (-247.0, -247.0, -330.0))
    anat = sample_anatomy(study_streams(7, 1)["anatomy"], -330.0, -330.0 + 39 * 6.0, 80.0, 1.75)
    tissue = rasterise(anat, grid)
    labels = labels_from_tissue(tissue)
    X, Y = np.meshgrid(grid.axis_mm("x"), grid.axis_mm("y"))
    dome = anat.dome_z(X, Y)
    z = grid.axis_mm("z")[:, None, None]
    body = (tissue != C.AIR) & ~np.isin(tissue, (C.TABLE_FOAM, C.TABLE_SHELL))
    below = (z < dome[None]) & body
    # Gas inside the body under the left dome (the stomach), not labelled lung.
    gas = (tissue == C.AIR) & (z < dome[None]) & (X[None] > anat.cx) & ndi_inside(body)
    assert gas.sum() > 5 and (labels[gas] == 0).all()
    # The heart rests on the diaphragm: no heart or myocardium below the dome, and some near it.
    heart = np.isin(tissue, (C.HEART_BLOOD, C.MYOCARDIUM))
    assert not (heart & below).any()
    assert (heart & (z < dome[None] + 20.0)).any()
    # Extrapleural fat between the ribcage and the lungs, labelled background.
    fat_in_chest = (tissue == C.FAT) & ~below & (z > dome[None])
    assert fat_in_chest.sum() > 100 and (labels[fat_in_chest] == 0).all()
    # Pericardial fat around the heart is mediastinum.
    near_heart = ndimage.binary_dilation(heart, iterations=1) & ~heart
    assert (tissue[near_heart] == C.MED_FAT).mean() > 0.3


def ndi_inside(body):
    """Body with its per-slice holes filled (air inside the body is enclosed)."""
    out = np.zeros_like(body)
    for k in range(body.shape[0]):
        out[k] = ndimage.binary_fill_holes(body[k])
    return out


def test_myocardium_uptake_varies_across_the_cohort(cohort):
    from colearn_pipeline.phantom.imaging import tissue_values

    cfg = make_config("tiny")
    lo, hi = cfg.tissue_suv[C.MYOCARDIUM]
    assert lo <= 1.5 and hi >= 10.0
    # the study's tissue SUVs are the first draws of its lesions stream: cheap to check over many studies
    values = [tissue_values(study_streams(1, i)["lesions"], cfg)[1][C.MYOCARDIUM] for i in range(20)]
    assert max(values) - min(values) > 4.0
    written = [_study_json(cohort, s)["myocardium_suv_true"] for s in _summary(cohort)["studies"]]
    assert all(lo <= v <= hi for v in written) and len(set(written)) == len(written)


def test_existing_identical_cohort_is_reused_and_foreign_data_is_protected(tmp_path):
    out = tmp_path / "raw"
    first = generate_cohort(out, n_studies=1, seed=3, size="tiny")
    files = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()}
    again = generate_cohort(out, n_studies=1, seed=3, size="tiny")
    assert again == first
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()} == files
    changed = generate_cohort(out, n_studies=1, seed=4, size="tiny")
    assert changed["parameters"]["seed"] == 4
    assert not list(out.glob(".phantom-*"))
    assert [p.name for p in (out / "phantom_truth").iterdir()] == [changed["studies"][0]["pseudonym"]]
    assert changed["studies"][0]["pseudonym"] != first["studies"][0]["pseudonym"]
    foreign = tmp_path / "foreign"
    (foreign / "dicom").mkdir(parents=True)
    (foreign / "dicom" / "patient.dcm").write_bytes(b"not ours")
    with pytest.raises(FileExistsError, match="refusing"):
        generate_cohort(foreign, n_studies=1, seed=3, size="tiny")


def test_config_rejects_unknown_names():
    with pytest.raises(ValueError, match="unknown phantom size"):
        make_config("huge")
    with pytest.raises(ValueError, match="unknown phantom parameter"):
        make_config("tiny", psf_fwhm=6.0)
    with pytest.raises(ValueError, match="unknown tissue"):
        make_config("tiny", tissue_suv={"pancreas": [1, 2]})
    cfg = make_config("tiny", pet_matrix=48, tissue_suv={"myocardium": [2.0, 3.0]})
    assert cfg.geometry.pet_matrix == 48 and cfg.tissue_suv[C.MYOCARDIUM] == (2.0, 3.0)


def test_kedro_node_writes_and_reuses(tmp_path):
    from colearn_pipeline.pipelines.phantom.nodes import generate_phantom_cohort

    params = {"out_dir": str(tmp_path), "n_studies": 1, "seed": 5, "size": "tiny", "workers": 1,
              "overrides": {"n_lesions": [2, 2]}}
    summary = generate_phantom_cohort(params)
    assert summary["n_lesions"] == 2
    assert json.loads((tmp_path / "phantom_cohort.json").read_text()) == summary
    assert generate_phantom_cohort(params) == summary


def test_recovery_check_flags_a_lesion_whose_threshold_region_leaks():
    from colearn_pipeline.phantom.imaging import recovery_leaks

    grid = Grid((10, 40, 40), (2.0, 2.0, 2.0), (0.0, 0.0, 0.0))
    pet = np.full(grid.shape_zyx, 0.5, np.float32)
    pet[3:7, 18:23, 8:13] = 10.0                      # a lesion centred at (20, 40, 10) mm
    seed = grid.point_of((5, 20, 10))
    allowed = [(seed, 8.0)]
    assert recovery_leaks(pet, grid, [seed], allowed, 0.4) == []
    pet[:, :, 13:] = 5.0                              # a warm organ touching it, above 40 % of the peak
    assert recovery_leaks(pet, grid, [seed], allowed, 0.4) == [0]
    pet[:, :, 13:16] = 0.5                            # a gap of cold tissue separates them again
    assert recovery_leaks(pet, grid, [seed], allowed, 0.4) == []


def test_truth_at_the_thoracic_inlet_is_the_region_between_the_lungs():
    """Through the narrowing apices all tissue between the lungs (in front of the vertebral body) is
    mediastinum, not only the drawn column; the sternum (manubrium) ends at the jugular notch."""
    grid = Grid((40, 96, 96), (5.2, 5.2, 6.0), (-247.0, -247.0, -330.0))
    anat = sample_anatomy(study_streams(7, 1)["anatomy"], -330.0, -330.0 + 39 * 6.0, 80.0, 1.75)
    tissue = rasterise(anat, grid)
    labels = labels_from_tissue(tissue)
    zs = grid.axis_mm("z")
    ys = grid.axis_mm("y")
    cols = np.arange(grid.shape_zyx[2])
    x_mid = int(np.argmin(np.abs(grid.axis_mm("x") - anat.cx)))
    checked = 0
    for k in np.nonzero(anat.t_of(zs) > anat.apex_t0 + 0.05)[0]:
        lung = labels[k] == 1
        right, left = lung & (cols[None, :] < x_mid), lung & (cols[None, :] >= x_mid)
        for row in np.nonzero(right.any(axis=1) & left.any(axis=1))[0]:
            if ys[row] >= anat.y_vb - anat.vb_r - 6.0:
                continue
            gap = slice(np.nonzero(right[row])[0].max() + 1, np.nonzero(left[row])[0].min())
            inner = tissue[k, row, gap]
            inside = ~np.isin(inner, (C.FAT, C.CORTEX, C.MARROW, C.LUNG, C.LUNG_VESSEL))
            assert (labels[k, row, gap][inside] == 2).all(), (k, row)
            checked += 1
    assert checked > 5
    sternum_rows = slice(0, int(np.searchsorted(ys, anat.y_sternum + anat.sternum_h + 2.0)))
    above_notch = zs > anat.z_jugular_notch + 3.0
    mid_strip = tissue[:, sternum_rows, x_mid - 1 : x_mid + 2]
    assert not np.isin(mid_strip[above_notch], (C.CORTEX, C.MARROW)).any()
    assert np.isin(mid_strip[(zs < anat.z_jugular_notch - 3.0) & (zs > anat.z_xiphoid + 3.0)], (C.CORTEX, C.MARROW)).any()
