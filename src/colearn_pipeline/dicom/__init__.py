"""DICOM discovery, series reading and geometry."""

from colearn_pipeline.dicom.errors import DicomSeriesError, DicomStudyError
from colearn_pipeline.dicom.pseudonym import pseudonymise
from colearn_pipeline.dicom.series import SeriesVolume, read_series

__all__ = ["DicomSeriesError", "DicomStudyError", "SeriesVolume", "pseudonymise", "read_series"]
