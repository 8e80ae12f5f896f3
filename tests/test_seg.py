"""DICOM SEG export (highdicom) of a label map on the CT grid, and the way back (read_label_map).

The label map is the tiny phantom's true labels: the same export serves the derived ground truth.
"""

import highdicom as hd
import numpy as np
import pydicom
import pytest
import SimpleITK as sitk

from colearn_pipeline.dicom.discovery import discover, select_ct_pet
from colearn_pipeline.dicom.series import read_series
from colearn_pipeline.groundtruth import LABELS
from colearn_pipeline.inference.seg import LabelMapError, build_seg, read_label_map, write_seg
from colearn_pipeline.phantom.generate import generate_cohort

SNOMED = {"Lung": "39607008", "Mediastinum": "72410000", "Tumour": "108369006"}


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    raw = tmp_path_factory.mktemp("phantom")
    generate_cohort(raw, n_studies=1, seed=11, size="tiny", progress=False)
    found = discover(raw / "dicom")
    (pseudonym, files), = found.studies.items()
    ct_info, _, _ = select_ct_pet(files, str(raw / "dicom"))
    ct = read_series(ct_info.files, pseudonym, root=raw / "dicom")
    truth = sitk.GetArrayFromImage(sitk.ReadImage(str(raw / "phantom_truth" / pseudonym / "labels.nii.gz")))
    return ct, truth.astype(np.uint8)


@pytest.fixture(scope="module")
def seg_file(study, tmp_path_factory):
    ct, labels = study
    algorithm = {"name": "colearn-pipeline groundtruth", "version": "0.1.0", "parameters": {"peak_fraction": "0.4"}}
    seg = build_seg(labels, ct.datasets, algorithm=algorithm, algorithm_type="SEMIAUTOMATIC")
    return write_seg(seg, tmp_path_factory.mktemp("seg") / f"{ct.study}.seg.dcm")


def test_seg_references_the_ct_series_and_frame(study, seg_file):
    ct, _ = study
    seg = hd.seg.segread(seg_file)
    first = ct.datasets[0]
    assert seg.Modality == "SEG" and seg.SegmentationType == "BINARY"
    assert seg.FrameOfReferenceUID == first.FrameOfReferenceUID
    assert seg.StudyInstanceUID == first.StudyInstanceUID and seg.PatientID == first.PatientID
    assert seg.SeriesInstanceUID != first.SeriesInstanceUID
    (ref,) = seg.ReferencedSeriesSequence
    assert ref.SeriesInstanceUID == first.SeriesInstanceUID
    assert {r.ReferencedSOPInstanceUID for r in ref.ReferencedInstanceSequence} <= {d.SOPInstanceUID for d in ct.datasets}


def test_segments_are_snomed_coded_with_colour_and_algorithm(seg_file):
    ds = pydicom.dcmread(seg_file)
    assert len(ds.SegmentSequence) == 3
    for item in ds.SegmentSequence:
        code = item.SegmentedPropertyTypeCodeSequence[0]
        assert (code.CodingSchemeDesignator, code.CodeValue) == ("SCT", SNOMED[item.SegmentLabel])
        assert item.SegmentNumber == LABELS[{"Lung": "lung", "Mediastinum": "mediastinum", "Tumour": "tumour"}[
            item.SegmentLabel]]
        assert len(item.RecommendedDisplayCIELabValue) == 3
        assert item.SegmentAlgorithmType == "SEMIAUTOMATIC"
        assert item.SegmentAlgorithmName == "colearn-pipeline groundtruth"
    category = {i.SegmentLabel: i.SegmentedPropertyCategoryCodeSequence[0].CodeValue for i in ds.SegmentSequence}
    assert category == {"Lung": "91723000", "Mediastinum": "91723000", "Tumour": "49755003"}


def test_each_frame_is_the_right_ct_slice_and_the_right_pixels(study, seg_file):
    ct, labels = study
    ds = pydicom.dcmread(seg_file)
    frames = ds.pixel_array.reshape(-1, ds.Rows, ds.Columns)
    z_of_sop = {d.SOPInstanceUID: z for z, d in enumerate(ct.datasets)}
    seen = set()
    for frame, item in zip(frames, ds.PerFrameFunctionalGroupsSequence):
        src = item.DerivationImageSequence[0].SourceImageSequence[0]
        z = z_of_sop[src.ReferencedSOPInstanceUID]
        np.testing.assert_allclose(item.PlanePositionSequence[0].ImagePositionPatient,
                                   [float(v) for v in ct.datasets[z].ImagePositionPatient], atol=1e-3)
        segment = int(item.SegmentIdentificationSequence[0].ReferencedSegmentNumber)
        np.testing.assert_array_equal(frame.astype(bool), labels[z] == segment)
        seen.add((z, segment))
    # every non-empty (slice, class) has its frame; empty ones are omitted
    expected = {(z, c) for z in range(labels.shape[0]) for c in (1, 2, 3) if (labels[z] == c).any()}
    assert seen == expected


def test_highdicom_reads_the_same_masks(study, seg_file):
    ct, labels = study
    seg = hd.seg.segread(seg_file)
    sops = [d.SOPInstanceUID for d in ct.datasets if d.SOPInstanceUID in {u[2] for u in seg.get_source_image_uids()}]
    pixels = seg.get_pixels_by_source_instance(source_sop_instance_uids=sops, segment_numbers=[1, 2, 3])
    z_of_sop = {d.SOPInstanceUID: z for z, d in enumerate(ct.datasets)}
    for sop, masks in zip(sops, pixels):
        for k, segment in enumerate((1, 2, 3)):
            np.testing.assert_array_equal(masks[..., k].astype(bool), labels[z_of_sop[sop]] == segment)


def test_read_label_map_round_trips_seg_and_nifti(study, seg_file, tmp_path):
    ct, labels = study
    np.testing.assert_array_equal(read_label_map(seg_file, ct), labels)
    nifti = tmp_path / "corrected.nii.gz"
    sitk.WriteImage(ct.to_sitk(labels), str(nifti))
    np.testing.assert_array_equal(read_label_map(nifti, ct), labels)


def test_read_label_map_resamples_a_nifti_saved_on_another_grid(study, tmp_path):
    ct, labels = study
    image = ct.to_sitk(labels)
    flipped = sitk.Flip(image, [True, False, False])  # same voxels in space, other index order
    path = tmp_path / "flipped.nii.gz"
    sitk.WriteImage(flipped, str(path))
    np.testing.assert_array_equal(read_label_map(path, ct), labels)


def test_read_label_map_refuses_other_scans_codes_and_values(study, seg_file, tmp_path):
    ct, labels = study
    ds = pydicom.dcmread(seg_file)
    ds.FrameOfReferenceUID = "1.2.3.4"
    other = tmp_path / "other.dcm"
    ds.save_as(other)
    with pytest.raises(LabelMapError, match="FrameOfReferenceUID"):
        read_label_map(other, ct)
    ds = pydicom.dcmread(seg_file)
    ds.SegmentSequence[0].SegmentedPropertyTypeCodeSequence[0].CodeValue = "12345"
    ds.save_as(other)
    with pytest.raises(LabelMapError, match=f"{ct.study}: other.dcm: segment 1 'Lung'"):
        read_label_map(other, ct)
    bad = tmp_path / "bad.nii.gz"
    sitk.WriteImage(ct.to_sitk((labels * 2).astype(np.uint8)), str(bad))
    with pytest.raises(LabelMapError, match="label values"):
        read_label_map(bad, ct)


def test_dcmqi_reads_the_seg_back_voxel_for_voxel_and_dciodvfy_accepts_it(study, seg_file):
    from dicom_validators import dciodvfy_errors, dcmqi_segments

    from colearn_pipeline.inference.seg import LABEL_OF_CODE

    ct, labels = study
    assert dciodvfy_errors(seg_file) == []
    masks = dcmqi_segments(seg_file, ct.to_sitk(np.zeros(ct.shape_zyx, np.uint8)))
    assert set(masks) == set(LABEL_OF_CODE)  # the phantom holds all three classes
    for code, mask in masks.items():
        np.testing.assert_array_equal(mask, labels == LABEL_OF_CODE[code], err_msg=code)
