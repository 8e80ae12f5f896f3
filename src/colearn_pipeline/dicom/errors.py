"""Errors raised by DICOM ingestion; every one names the study (pseudonym), the file and the problem."""

from __future__ import annotations


class DicomSeriesError(ValueError):
    """A series or study that cannot be turned into a volume.

    Parameters
    ----------
    study : str
        The study's pseudonym (never a patient identifier).
    file : str
        The file concerned (path as given, or relative to the raw root), or ``"-"`` when the
        problem is not one file's.
    problem : str
        What is wrong, in words a user can act on.

    Notes
    -----
    ``str(error)`` reads ``"<study>: <file>: <problem>"``; the parts are kept as attributes so a
    pipeline can record them separately in its manifest.
    """

    def __init__(self, study: str, file: str, problem: str) -> None:
        self.study = str(study)
        self.file = str(file)
        self.problem = str(problem)
        super().__init__(f"{self.study}: {self.file}: {self.problem}")

    def __reduce__(self):  # keep the three fields across process boundaries (ProcessPoolExecutor)
        return (type(self), (self.study, self.file, self.problem))


class DicomStudyError(DicomSeriesError):
    """A study-level problem: no PET next to the CT, different frames of reference, ..."""
