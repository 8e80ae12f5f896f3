"""DICOM discovery, series reading and geometry."""

from colearn_pipeline.dicom.discovery import Discovery, SeriesInfo, StudyFiles, discover
from colearn_pipeline.dicom.selection import SelectionRules, SeriesChoice, choose_series, select_ct_pet
from colearn_pipeline.dicom.errors import DicomSeriesError, DicomStudyError
from colearn_pipeline.dicom.grid import physical_to_index_zyx, resample_to_reference, resize_slices
from colearn_pipeline.dicom.pseudonym import file_label, pseudonymise, series_label
from colearn_pipeline.dicom.series import SeriesVolume, read_series

__all__ = [
    "DicomSeriesError",
    "DicomStudyError",
    "Discovery",
    "SelectionRules",
    "SeriesChoice",
    "choose_series",
    "file_label",
    "series_label",
    "SeriesInfo",
    "SeriesVolume",
    "StudyFiles",
    "discover",
    "physical_to_index_zyx",
    "pseudonymise",
    "read_series",
    "resample_to_reference",
    "resize_slices",
    "select_ct_pet",
]
