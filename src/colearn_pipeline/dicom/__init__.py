"""DICOM discovery, series reading and geometry."""

from colearn_pipeline.dicom.pseudonym import pseudonymise

__all__ = ["pseudonymise"]
