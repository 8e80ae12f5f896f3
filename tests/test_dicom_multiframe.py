"""Enhanced PET: per-frame functional groups become classic slice headers (position, rescale, timing)."""

from __future__ import annotations

import numpy as np
import pytest
from dicom_fixtures import pet_suv_tags, write_enhanced, write_series
from pydicom.dataset import Dataset

from colearn_pipeline.dicom.multiframe import frame_headers


def _item(**tags) -> Dataset:
    ds = Dataset()
    for k, v in tags.items():
        setattr(ds, k, v)
    return ds


def test_enhanced_pet_frame_groups_map_to_classic_tags():
    ds = Dataset()
    ds.Modality, ds.NumberOfFrames = "PT", 2
    ds.SeriesDate, ds.SeriesTime = "20240101", "100000"
    ds.Units = "BQML"
    ds.SharedFunctionalGroupsSequence = [_item(
        PixelMeasuresSequence=[_item(PixelSpacing=[4, 4], SliceThickness=3)],
        PlaneOrientationSequence=[_item(ImageOrientationPatient=[1, 0, 0, 0, 1, 0])],
    )]
    ds.PerFrameFunctionalGroupsSequence = [
        _item(
            PlanePositionSequence=[_item(ImagePositionPatient=[0, 0, 3.0 * k])],
            PixelValueTransformationSequence=[_item(RescaleSlope=str(0.5 + k), RescaleIntercept="0")],
            FrameContentSequence=[_item(FrameAcquisitionDateTime=f"2024010110{2 * k:02d}00",
                                        FrameReferenceDateTime=f"2024010110{2 * k + 1:02d}00",
                                        FrameAcquisitionDuration=120000.0)],
        )
        for k in range(2)
    ]
    frames = frame_headers(ds)
    assert [f.ImagePositionPatient[2] for f in frames] == [0.0, 3.0]
    assert [float(f.RescaleSlope) for f in frames] == [0.5, 1.5]
    assert [str(f.AcquisitionTime)[:6] for f in frames] == ["100000", "100200"]
    assert [float(f.FrameReferenceTime) for f in frames] == [60000.0, 180000.0]
    assert [int(f.ActualFrameDuration) for f in frames] == [120000, 120000]
    assert frames[1].Units == "BQML" and "PerFrameFunctionalGroupsSequence" not in frames[0]
    assert "AcquisitionTime" not in ds  # the source object is left as it was


def test_legacy_converted_pet_keeps_each_frames_timing(tmp_path):
    def timed(ds, k):
        pet_suv_tags()(ds, k)
        ds.AcquisitionTime = f"10{2 * k:02d}00"
        ds.ActualFrameDuration = 120000
        ds.FrameReferenceTime = f"{60000 + 120000 * k}"

    files = write_series(tmp_path / "c", np.full((3, 4, 4), 10.0), modality="PT",
                         study_uid="1.2.3", frame_uid="1.2.4", extra=timed)
    import pydicom

    from colearn_pipeline.dicom import read_series

    multi = read_series([write_enhanced(files, tmp_path / "mf.dcm")])
    classic = [pydicom.dcmread(f) for f in files]
    for a, b in zip(classic, multi.datasets):
        assert str(b.AcquisitionTime)[:6] == str(a.AcquisitionTime)
        assert int(b.ActualFrameDuration) == 120000
        assert float(b.FrameReferenceTime) == pytest.approx(float(a.FrameReferenceTime))
