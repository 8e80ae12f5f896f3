"""colearn-predict from DICOM: a phantom study without a report segmented by a net trained here."""

import json
import shutil

import highdicom as hd
import numpy as np
import pandas as pd
import pydicom
import pytest
import SimpleITK as sitk
import torch

from colearn_pipeline.dicom.discovery import discover, select_ct_pet
from colearn_pipeline.dicom.series import read_series
from colearn_pipeline.inference.cli import main
from colearn_pipeline.inference.segment import segment_volume
from colearn_pipeline.inference.summary import index_to_lps_mm, summarise_labels
from colearn_pipeline.phantom.generate import generate_cohort
from synthetic_studies import tiny_bundle_file


@pytest.fixture(scope="module")
def tiny_bundle(tmp_path_factory):
    """A width-4 co-learning net trained for 3 epochs on synthetic 32x32 slices."""
    return tiny_bundle_file(tmp_path_factory.mktemp("model"), epochs=3)


@pytest.fixture(scope="module")
def phantom(tmp_path_factory):
    """One tiny phantom study; its report is deleted (a new patient has none)."""
    raw = tmp_path_factory.mktemp("raw")
    generate_cohort(raw, n_studies=1, seed=5, size="tiny", progress=False)
    shutil.rmtree(raw / "reports")
    (pseudonym, files), = discover(raw / "dicom").studies.items()
    ct_info, pet_info, _ = select_ct_pet(files, str(raw / "dicom"))
    return raw, pseudonym, ct_info.files, pet_info.files


@pytest.fixture(scope="module")
def predicted(phantom, tiny_bundle, tmp_path_factory):
    raw, pseudonym, _, _ = phantom
    out = tmp_path_factory.mktemp("out")
    code = main([str(raw / "dicom"), "--model", str(tiny_bundle[1]), "--out", str(out), "--device", "cpu"])
    return code, out, pseudonym


def test_study_without_report_is_segmented_on_the_ct_grid(phantom, predicted):
    raw, pseudonym, ct_files, _ = phantom
    code, out, _ = predicted
    assert code == 0
    names = {p.name for p in out.iterdir()}
    assert {f"{pseudonym}.nii.gz", f"{pseudonym}.seg.dcm", f"{pseudonym}.sr.dcm", f"{pseudonym}.summary.json",
            f"{pseudonym}.summary.csv", "manifest.csv"} <= names
    ct = read_series(ct_files, pseudonym)
    image = sitk.ReadImage(str(out / f"{pseudonym}.nii.gz"))
    assert image.GetSize() == ct.shape_zyx[::-1]
    np.testing.assert_allclose(image.GetOrigin(), ct.origin_xyz_mm, atol=1e-4)
    np.testing.assert_allclose(image.GetSpacing(), ct.spacing_xyz_mm, atol=1e-4)
    labels = sitk.GetArrayFromImage(image)
    first, last = json.loads((out / f"{pseudonym}.summary.json").read_text())["thorax_slices"]
    # the thorax range covers every slice with true lung, not only tumour slices
    truth = sitk.GetArrayFromImage(sitk.ReadImage(str(raw / "phantom_truth" / pseudonym / "labels.nii.gz")))
    lung_z = np.flatnonzero((truth == 1).any(axis=(1, 2)))
    assert first <= lung_z[0] and lung_z[-1] <= last
    outside = np.r_[0:first, last + 1 : labels.shape[0]]
    assert labels[outside].max(initial=0) == 0 and labels.max() <= 3
    manifest = pd.read_csv(out / "manifest.csv")
    assert manifest["status"].tolist() == ["ok"] and manifest["pseudonym"].tolist() == [pseudonym]


def test_seg_pixels_equal_the_nifti_and_reference_the_ct(phantom, predicted):
    _, pseudonym, ct_files, _ = phantom
    _, out, _ = predicted
    ct = read_series(ct_files, pseudonym)
    labels = sitk.GetArrayFromImage(sitk.ReadImage(str(out / f"{pseudonym}.nii.gz")))
    seg = hd.seg.segread(out / f"{pseudonym}.seg.dcm")
    assert seg.FrameOfReferenceUID == ct.datasets[0].FrameOfReferenceUID
    assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == ct.datasets[0].SeriesInstanceUID
    sops = [d.SOPInstanceUID for d in ct.datasets]
    pixels = seg.get_pixels_by_source_instance(source_sop_instance_uids=sops, segment_numbers=[1, 2, 3],
                                               assert_missing_frames_are_empty=True)
    for z in range(labels.shape[0]):
        for k, segment in enumerate((1, 2, 3)):
            np.testing.assert_array_equal(pixels[z, ..., k].astype(bool), labels[z] == segment)
    algo = seg.SegmentSequence[0].SegmentationAlgorithmIdentificationSequence[0]
    assert algo.AlgorithmName == "colearn-pipeline colearn" and "fingerprint" in algo.AlgorithmVersion
    assert [s.SegmentedPropertyTypeCodeSequence[0].CodeValue for s in seg.SegmentSequence] == [
        "39607008", "72410000", "108369006"]


def test_summary_matches_the_label_map_and_names_no_patient(phantom, predicted):
    _, pseudonym, ct_files, _ = phantom
    _, out, _ = predicted
    image = sitk.ReadImage(str(out / f"{pseudonym}.nii.gz"))
    labels = sitk.GetArrayFromImage(image)
    voxel_ml = np.prod(image.GetSpacing()) / 1000
    summary = json.loads((out / f"{pseudonym}.summary.json").read_text())
    assert summary["study"] == pseudonym and summary["net"] == "colearn"
    assert summary["lungs_ml"] == pytest.approx((labels == 1).sum() * voxel_ml, abs=1e-3)
    assert summary["mediastinum_ml"] == pytest.approx((labels == 2).sum() * voxel_ml, abs=1e-3)
    assert sum(t["voxels"] for t in summary["tumours"]) == (labels == 3).sum()
    for t in summary["tumours"]:
        assert t["suv_max"] >= t["suv_mean"] >= 0
    table = pd.read_csv(out / f"{pseudonym}.summary.csv")
    assert table["structure"].tolist() == ["lungs", "mediastinum"] + ["tumour"] * summary["n_tumours"] + [
        "tumour_total"]
    header = pydicom.dcmread(ct_files[0], stop_before_pixels=True)
    identifiers = [str(header.PatientName), str(header.PatientID)]
    for path in out.iterdir():
        if path.suffix != ".dcm" and not path.name.endswith(".nii.gz"):
            text = path.read_text()
            assert not any(i in text for i in identifiers), path.name
    assert pydicom.dcmread(out / f"{pseudonym}.seg.dcm").PatientID == header.PatientID  # files beside the study


class _ConstantNet(torch.nn.Module):
    """Logits that pick ``label`` everywhere: shows which slices were segmented."""

    def __init__(self, label: int) -> None:
        super().__init__()
        self.label = label

    def forward(self, x):
        logits = torch.zeros(x.shape[0], 4, *x.shape[2:])
        logits[:, self.label] = 1.0
        return logits


def test_segment_volume_labels_exactly_the_given_slices_at_ct_size():
    ct = np.random.default_rng(0).normal(size=(9, 20, 24)).astype(np.float32)
    labels = segment_volume(_ConstantNet(2), ct, ct.copy(), [2, 3, 4, 5, 6], (8, 8), batch_size=2, chunk_slices=2)
    assert labels.shape == (9, 20, 24) and labels.dtype == np.uint8
    assert (labels[2:7] == 2).all() and labels[[0, 1, 7, 8]].max() == 0


def test_summary_of_two_tumours_with_known_volume_suv_and_centroid():
    labels = np.zeros((10, 12, 14), np.uint8)
    suv = np.zeros(labels.shape, np.float32)
    labels[1:3, 1:3, 1:3] = 3                 # 8 voxels
    suv[1:3, 1:3, 1:3] = [[[2, 4], [4, 4]], [[4, 4], [4, 4]]]
    labels[5:9, 6:10, 8:12] = 3               # 64 voxels
    suv[5:9, 6:10, 8:12] = 10.0
    labels[0, 10:, :] = 1
    spacing, origin = (0.5, 0.5, 2.0), (-10.0, 20.0, 100.0)
    direction = (-1, 0, 0, 0, 1, 0, 0, 0, -1)   # x and z flipped
    s = summarise_labels(labels, suv, spacing, origin, direction)
    assert s["n_tumours"] == 2 and s["lungs_ml"] == pytest.approx(2 * 14 * 0.5 / 1000)
    big, small = s["tumours"]
    assert (big["voxels"], small["voxels"]) == (64, 8)
    assert big["volume_ml"] == pytest.approx(64 * 0.5 / 1000) and s["tumour_ml"] == pytest.approx(72 * 0.5 / 1000)
    assert (small["suv_max"], small["suv_mean"]) == (4.0, pytest.approx(3.75))
    # centre of the big cube: index (z, y, x) = (6.5, 7.5, 9.5)
    assert big["centroid_lps_mm"] == pytest.approx([-10 - 9.5 * 0.5, 20 + 7.5 * 0.5, 100 - 6.5 * 2.0])
    np.testing.assert_allclose(index_to_lps_mm(np.array([[0, 0, 0]]), spacing, origin, direction), [origin])


def _copy(files, folder):
    folder.mkdir(parents=True)
    for i, f in enumerate(files):
        shutil.copy(f, folder / f"{i:03d}.dcm")
    return folder


def test_study_without_pet_is_refused_with_its_pseudonym(phantom, tiny_bundle, tmp_path, capsys):
    _, pseudonym, ct_files, _ = phantom
    folder = _copy(ct_files, tmp_path / "ct_only")
    assert main([str(folder), "--model", str(tiny_bundle[1]), "--out", str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err
    assert f"{pseudonym}: " in err and "no PET series" in err
    assert not list((tmp_path / "out").glob("*.seg.dcm"))


def test_unreadable_series_names_the_file(phantom, tiny_bundle, tmp_path, capsys):
    _, pseudonym, ct_files, pet_files = phantom
    folder = _copy(list(ct_files) + list(pet_files), tmp_path / "study")
    victim = folder / "003.dcm"
    victim.write_bytes(victim.read_bytes()[:-4000])  # pixel data cut short
    assert main([str(folder), "--model", str(tiny_bundle[1]), "--out", str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err
    assert f"{pseudonym}: 003.dcm: " in err and "pixel data" in err
    manifest = pd.read_csv(tmp_path / "out" / "manifest.csv")
    assert manifest.loc[0, "status"] == "quarantined" and manifest.loc[0, "file"] == "003.dcm"


def test_folder_without_dicom_says_so(tiny_bundle, tmp_path, capsys):
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "notes.txt").write_text("not DICOM")
    assert main([str(tmp_path / "in"), "--model", str(tiny_bundle[1]), "--out", str(tmp_path / "out")]) == 1
    assert "no DICOM study found in the input; 1 files skipped" in capsys.readouterr().err


def test_files_given_one_by_one_are_a_study(phantom, tiny_bundle, tmp_path):
    _, pseudonym, ct_files, pet_files = phantom
    out = tmp_path / "out"
    assert main([*ct_files, *pet_files, "--model", str(tiny_bundle[1]), "--out", str(out)]) == 0
    assert (out / f"{pseudonym}.seg.dcm").is_file()


@pytest.mark.parametrize("content, problem", [
    (None, "file does not exist"),
    (b"not a torch file", "not a colearn-pipeline model bundle"),
    ({"format": "something-else/1"}, "not a colearn-pipeline-model/1 bundle"),
])
def test_wrong_model_file_gives_a_clear_message(phantom, tmp_path, capsys, content, problem):
    raw = phantom[0]
    model = tmp_path / "model.pt"
    if isinstance(content, bytes):
        model.write_bytes(content)
    elif content is not None:
        torch.save(content, model)
    assert main([str(raw / "dicom"), "--model", str(model), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert f"model {model}: {problem}" in err and "Traceback" not in err


def test_model_uri_from_mlflow_loads(tiny_bundle, tmp_path, monkeypatch):
    """The bundle logged by the training hook loads as runs:/<id>/model and models:/<name>/<version>."""
    import mlflow
    from mlflow.tracking import MlflowClient

    from colearn_pipeline.hooks import MlflowHooks, MlflowSettings
    from colearn_pipeline.inference.models import ModelLoadError, load_bundle

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    client = MlflowClient()
    experiment = client.create_experiment("predict-test", artifact_location=(tmp_path / "artifacts").as_uri())
    run_id = client.create_run(experiment).info.run_id
    hooks = MlflowHooks()
    hooks._client = client
    hooks._settings = MlflowSettings(enabled=True, tracking_uri=None, experiment_name="predict-test", log_models=False,
                                     fail_on_logging_error=True)
    hooks._log_model(run_id, tiny_bundle[0])
    client.set_terminated(run_id)
    client.create_registered_model("colearn-test")
    client.create_model_version("colearn-test", f"runs:/{run_id}/state_dict", run_id=run_id)

    for uri in (f"runs:/{run_id}/model", "models:/colearn-test/1"):
        bundle, provenance = load_bundle(uri)
        assert provenance == {"source": uri, "mlflow_run_id": run_id}
        assert bundle["net"] == "colearn" and bundle["input_hw"] == [32, 32]
        for key, value in tiny_bundle[0]["state_dict"].items():
            assert torch.equal(bundle["state_dict"][key], value), key
    with pytest.raises(ModelLoadError, match="models:/colearn-test/7: not found"):
        load_bundle("models:/colearn-test/7")
    with pytest.raises(ModelLoadError, match="has no state_dict/model.pt"):
        load_bundle("runs:/0123456789abcdef/model")


def test_sr_beside_the_seg_holds_the_summary_figures(phantom, predicted):
    from dicom_validators import dciodvfy_errors, sr_measurement_groups

    _, pseudonym, ct_files, _ = phantom
    _, out, _ = predicted
    summary = json.loads((out / f"{pseudonym}.summary.json").read_text())
    path = out / f"{pseudonym}.sr.dcm"
    assert dciodvfy_errors(path) == []
    ds = pydicom.dcmread(path)
    seg = pydicom.dcmread(out / f"{pseudonym}.seg.dcm", stop_before_pixels=True)
    assert ds.StudyInstanceUID == seg.StudyInstanceUID and ds.PatientID == seg.PatientID
    groups = sr_measurement_groups(ds)
    assert [g["tracking_id"] for g in groups] == [f"Tumour component {t['component']}" for t in summary["tumours"]] + [
        "All tumour components"]
    for group, figures in zip(groups, [*summary["tumours"], summary["tumour_totals"]]):
        assert group["values"][("126032", None)][0] == pytest.approx(figures["volume_ml"])
        assert group["values"][("126033", None)][0] == pytest.approx(figures["tlg_g"])
        if figures["suv_peak"] is not None:
            assert group["values"][("126401", "126031")][0] == pytest.approx(figures["suv_peak"])
            assert group["segment"] == (seg.SOPInstanceUID, 3)
