"""The one error type of the SUV package."""

from __future__ import annotations

class SuvError(ValueError):
    """A PET series whose SUV cannot be computed; the message names the offending tag.

    Parameters
    ----------
    problem : str
        What is wrong.
    tag : str
        The DICOM attribute, e.g. ``"PatientWeight (0010,1030)"``.
    source : str
        A label for the series (pseudonym / series), never a patient identifier.
    file : str
        Base name of the file concerned, or ``""``.
    """

    def __init__(self, problem: str, tag: str = "", source: str = "", file: str = "") -> None:
        self.problem = str(problem)
        self.tag = str(tag)
        self.source = str(source)
        self.file = str(file)
        parts = [p for p in (self.source, self.file) if p]
        prefix = ": ".join(parts)
        body = f"{self.tag}: {self.problem}" if self.tag else self.problem
        super().__init__(f"{prefix}: {body}" if prefix else body)

    def __reduce__(self):  # keep the fields across process boundaries
        return (type(self), (self.problem, self.tag, self.source, self.file))

