"""NiftiDataset and NpzDataset: round trips, atomic writes, use inside PartitionedDataset."""

from __future__ import annotations

import json

import numpy as np
import pytest
import SimpleITK as sitk
from kedro.io import DatasetError
from kedro_datasets.partitions import PartitionedDataset

from colearn_pipeline.datasets import NiftiDataset, NpzDataset


def _image():
    arr = np.arange(4 * 5 * 6, dtype=np.float32).reshape(4, 5, 6)
    img = sitk.GetImageFromArray(arr)
    img.SetSpacing((0.9, 0.8, 3.0))
    img.SetOrigin((-100.0, 20.0, -300.5))
    c, s = np.cos(0.2), np.sin(0.2)
    img.SetDirection((c, -s, 0.0, s, c, 0.0, 0.0, 0.0, 1.0))
    return arr, img


def test_nifti_round_trip_keeps_geometry(tmp_path):
    arr, img = _image()
    ds = NiftiDataset(str(tmp_path / "sub" / "v.nii.gz"))
    assert not ds.exists()
    ds.save(img)
    assert ds.exists()
    back = ds.load()
    np.testing.assert_array_equal(sitk.GetArrayFromImage(back), arr)
    np.testing.assert_allclose(back.GetSpacing(), img.GetSpacing(), atol=1e-6)
    np.testing.assert_allclose(back.GetOrigin(), img.GetOrigin(), atol=1e-4)
    np.testing.assert_allclose(back.GetDirection(), img.GetDirection(), atol=1e-6)
    assert sorted(p.name for p in (tmp_path / "sub").iterdir()) == ["v.nii.gz"]


def test_nifti_rejects_bad_path_and_data(tmp_path):
    with pytest.raises(DatasetError, match=".nii"):
        NiftiDataset(str(tmp_path / "v.mha"))
    with pytest.raises(DatasetError, match="SimpleITK.Image"):
        NiftiDataset(str(tmp_path / "v.nii")).save(np.zeros((2, 2, 2)))


def test_npz_round_trip_and_no_pickle(tmp_path):
    ds = NpzDataset(str(tmp_path / "m.npz"))
    data = {"a": np.ones((2, 3), np.float32), "study": np.array("study-0123456789"), "i": np.arange(3, dtype=np.int32)}
    ds.save(data)
    back = ds.load()
    assert set(back) == set(data)
    assert back["study"].dtype.kind == "U" and str(back["study"]) == "study-0123456789"
    assert back["a"].dtype == np.float32 and back["i"].dtype == np.int32
    with pytest.raises(DatasetError, match="object array"):
        ds.save({"x": np.array([{"a": 1}], dtype=object)})


def test_failed_save_keeps_old_file_and_leaves_no_temporary(tmp_path):
    ds = NpzDataset(str(tmp_path / "m.npz"))
    ds.save({"a": np.zeros(3)})
    before = (tmp_path / "m.npz").read_bytes()

    class Boom:
        def __array__(self, *args, **kwargs):
            raise RuntimeError("disk full")

    with pytest.raises(DatasetError):
        ds.save({"a": np.ones(3), "b": Boom()})
    assert (tmp_path / "m.npz").read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["m.npz"]


def test_partitioned_dataset_with_full_import_path(tmp_path):
    _, img = _image()
    part = PartitionedDataset(
        path=str(tmp_path / "vols"), dataset="colearn_pipeline.datasets.NiftiDataset", filename_suffix=".nii.gz"
    )
    part.save({"study-a": img, "study-b": lambda: img})
    loaded = part.load()
    assert sorted(loaded) == ["study-a", "study-b"]
    assert loaded["study-b"]().GetSize() == img.GetSize()


def test_save_moves_a_staged_file_into_place(tmp_path):
    _, img = _image()
    staged = tmp_path / "stage" / "x.nii.gz"
    NiftiDataset(str(staged)).save(img)
    target = NiftiDataset(str(tmp_path / "final" / "study-a.nii.gz"))
    target.save(staged)
    assert not staged.exists() and target.load().GetSize() == img.GetSize()
    with pytest.raises(DatasetError, match="does not match"):
        NiftiDataset(str(tmp_path / "final" / "b.nii")).save(tmp_path / "final" / "study-a.nii.gz")
    npz = tmp_path / "stage" / "m.npz"
    NpzDataset(str(npz)).save({"a": np.arange(3)})
    NpzDataset(str(tmp_path / "final" / "m.npz")).save(npz)
    assert NpzDataset(str(tmp_path / "final" / "m.npz")).load()["a"].tolist() == [0, 1, 2]


def test_replacing_partitioned_dataset_removes_only_stale_partitions(tmp_path):
    from colearn_pipeline.datasets import ReplacingPartitionedDataset

    folder = tmp_path / "model_input"
    folder.mkdir()
    (folder / ".gitkeep").write_text("")
    (folder / "notes.txt").write_text("not a partition")
    part = ReplacingPartitionedDataset(path=str(folder), dataset="colearn_pipeline.datasets.NpzDataset", filename_suffix=".npz")
    part.save({"study-a": {"x": np.zeros(2)}, "study-b": {"x": np.ones(2)}})
    part.save({"study-b": {"x": np.full(2, 2.0)}})  # study-a quarantined in this run
    assert sorted(p.name for p in folder.iterdir()) == [".gitkeep", "notes.txt", "study-b.npz"]
    assert part.load()["study-b"]()["x"].tolist() == [2.0, 2.0]
    with pytest.raises(ValueError, match="overwrite"):
        ReplacingPartitionedDataset(path=str(folder), dataset="colearn_pipeline.datasets.NpzDataset", overwrite=True)


def _staged_image(folder, value: float):
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "ct_hu.nii.gz"
    sitk.WriteImage(sitk.GetImageFromArray(np.full((2, 3, 4), value, np.float32)), str(path))
    return str(path)


def test_study_partitions_commit_load_lazily_and_keep_failed_outputs(tmp_path):
    from colearn_pipeline.datasets import StudyOutput, StudyPartitionsDataset

    ds = StudyPartitionsDataset(path=str(tmp_path / "data"), records_dir=str(tmp_path / "data/.records/x"),
                                members={"ct_hu": "ct_hu/{pseudonym}.nii.gz"})
    staging = tmp_path / "staging"
    ds.save({
        "study-a": StudyOutput("ok", "fp-a", row={"n": 1}, staged={"ct_hu": _staged_image(staging / "a", 1.0)}),
        "study-b": StudyOutput("ok", "fp-b", staged={"ct_hu": _staged_image(staging / "b", 2.0)}),
        "study-c": StudyOutput("quarantined", "fp-c", reason="bad header", file="ct/1.dcm"),
    })
    assert not staging.exists() or not any(staging.iterdir())  # staged files moved, their folders removed
    loaded = ds.load()
    assert sorted(loaded) == ["study-a", "study-b"] and sorted(loaded.records) == ["study-a", "study-b", "study-c"]
    assert loaded.records["study-c"]["reason"] == "bad header"
    part = loaded["study-a"]
    assert part.fingerprint == "fp-a" and part.record["row"] == {"n": 1}
    assert sitk.GetArrayFromImage(part()).max() == 1.0  # loaded only when called
    # next run: a is unchanged, b's worker died (its earlier file stays), c is gone from the raw data
    ds.save({"study-a": StudyOutput("unchanged", "fp-a"),
             "study-b": StudyOutput("failed", reason="worker died")})
    loaded = ds.load()
    assert sorted(loaded.records) == ["study-a", "study-b"]
    assert loaded.records["study-b"]["status"] == "failed" and loaded.records["study-b"]["previous"]["fingerprint"] == "fp-b"
    assert sitk.GetArrayFromImage(loaded["study-b"]()).max() == 2.0
    # quarantined now: its files go
    ds.save({"study-a": StudyOutput("quarantined", "fp-a2", reason="r", file="f"), "study-b": StudyOutput("unchanged", None)})
    assert not (tmp_path / "data/ct_hu/study-a.nii.gz").exists() and "study-a" not in ds.load()


def test_study_partitions_interrupted_commit_is_never_taken_for_a_finished_one(tmp_path):
    from colearn_pipeline.datasets import StudyOutput, StudyPartitionsDataset

    ds = StudyPartitionsDataset(path=str(tmp_path / "data"), records_dir=str(tmp_path / "rec"),
                                members={"ct_hu": "ct_hu/{pseudonym}.nii.gz"})
    ds.save({"study-a": StudyOutput("ok", "fp-1", staged={"ct_hu": _staged_image(tmp_path / "s1", 1.0)})})
    with pytest.raises(Exception):  # the staged file vanished: the commit fails half way
        ds.save({"study-a": StudyOutput("ok", "fp-2", staged={"ct_hu": str(tmp_path / "missing.nii.gz")})})
    loaded = ds.load()
    assert "study-a" not in loaded.records  # no record: the next run recomputes it, never trusts the files
    assert loaded["study-a"].fingerprint is None and loaded["study-a"].status == "None"
    assert (tmp_path / "data/ct_hu/study-a.nii.gz").exists()  # and nothing was deleted


def test_model_input_files_put_there_by_hand_are_partitions(tmp_path):
    """train_eval reads `model_input`; NPZ files placed without a preprocess run are its partitions too."""
    from colearn_pipeline.datasets import StudyPartitionsDataset

    np.savez(tmp_path / "study-0000000001.npz", labels=np.zeros((1, 2, 2), np.uint8))
    (tmp_path / "notes.txt").write_text("not a partition")
    ds = StudyPartitionsDataset(path=str(tmp_path), records_dir=str(tmp_path / ".records/model_input"),
                                members={"model_input": "{pseudonym}.npz"})
    loaded = ds.load()
    assert list(loaded) == ["study-0000000001"] and loaded.records == {}
    assert loaded["study-0000000001"]()["labels"].shape == (1, 2, 2)


def test_raw_datasets_read_by_tags_and_refuse_a_writer_elsewhere(tmp_path):
    import json

    from colearn_pipeline.datasets import DicomTreeDataset, ReportsDataset

    reports = tmp_path / "reports"
    reports.mkdir()
    (reports / "a.json").write_text(json.dumps({"study_instance_uid": "1.2.3", "findings": [{"position_mm": [1, 2, 3]}]}))
    (reports / "b.json").write_text("{not json")
    loaded = ReportsDataset(str(reports)).load()
    assert loaded["findings"]["1.2.3"] == [{"position_mm": [1, 2, 3]}] and len(loaded["digests"]["1.2.3"]) == 64
    assert loaded["problems"][0][0] == "reports/b.json" and "unusable report" in loaded["problems"][0][1]
    ReportsDataset(str(reports)).save(str(reports))  # the writer wrote where the catalog reads: fine
    with pytest.raises(DatasetError, match="catalog reads"):
        ReportsDataset(str(reports)).save(str(tmp_path / "elsewhere"))
    (tmp_path / "dicom").mkdir()
    tree = DicomTreeDataset(str(tmp_path / "dicom")).load()
    assert tree.discover("k") is tree.discover("k") and not tree.discover("k").studies
    with pytest.raises(DatasetError, match="no DICOM folder"):
        DicomTreeDataset(str(tmp_path / "none")).load()


def test_reports_with_a_byte_order_mark_are_read_and_listed_by_study(tmp_path):
    """Issue 11: a report saved with a UTF-8 BOM (Windows editors) is read, not refused as unusable."""
    from colearn_pipeline.datasets import ReportsDataset

    reports = tmp_path / "reports"
    reports.mkdir()
    body = json.dumps({"study_instance_uid": "1.2.3", "findings": [{"kind": "primary", "position_mm": [1, 2, 3]}]})
    (reports / "bom.json").write_bytes(b"\xef\xbb\xbf" + body.encode("utf-8"))
    (reports / "broken.json").write_text("{not json")
    loaded = ReportsDataset(str(reports)).load()
    assert loaded["findings"] == {"1.2.3": [{"kind": "primary", "position_mm": [1, 2, 3]}]}
    assert loaded["files"] == {"1.2.3": ["reports/bom.json"]}
    assert [f for f, _ in loaded["problems"]] == ["reports/broken.json"]
