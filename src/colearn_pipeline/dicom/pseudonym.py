"""Study and patient pseudonyms: the only study and patient names that reach logs, intermediates,
MLflow and file names."""

from __future__ import annotations

import hashlib
import os
import hmac

DEFAULT_PSEUDONYM_KEY = "colearn-pipeline"
PSEUDONYM_PREFIX = "study-"
PATIENT_PREFIX = "patient-"
PSEUDONYM_HEX_DIGITS = 10


def pseudonymise(study_instance_uid: str, key: str = DEFAULT_PSEUDONYM_KEY) -> str:
    """Return the stable pseudonym of a study.

    Parameters
    ----------
    study_instance_uid : str
        The study's StudyInstanceUID (0020,000D).
    key : str
        Secret key of the keyed hash; a site that keeps its key private makes the
        pseudonyms unlinkable to the UIDs by anyone without it.

    Returns
    -------
    str
        ``"study-"`` followed by ten hexadecimal digits of HMAC-SHA256(key, uid).
    """
    if not study_instance_uid or not str(study_instance_uid).strip():
        raise ValueError("StudyInstanceUID is empty: cannot derive a pseudonym")
    digest = hmac.new(key.encode(), str(study_instance_uid).strip().encode(), hashlib.sha256)
    return PSEUDONYM_PREFIX + digest.hexdigest()[:PSEUDONYM_HEX_DIGITS]


def patient_pseudonym(patient_id: str | None, study_pseudonym: str, key: str = DEFAULT_PSEUDONYM_KEY) -> str:
    """Return the pseudonym of a study's patient, the unit the split keeps on one side.

    Parameters
    ----------
    patient_id : str or None
        The study's PatientID (0010,0020); None or blank where the header has none.
    study_pseudonym : str
        The study's pseudonym (:func:`pseudonymise`): the patient's name where PatientID is
        missing, so such a study is a patient of its own.
    key : str
        The same secret key as the study pseudonyms.

    Returns
    -------
    str
        ``"patient-"`` followed by ten hexadecimal digits of HMAC-SHA256(key, ``"PatientID:" + id``)
        (the prefix keeps patient and study hashes apart), or ``study_pseudonym``.
    """
    text = "" if patient_id is None else str(patient_id).strip()
    if not text:
        return study_pseudonym
    return PATIENT_PREFIX + short_hash("PatientID:" + text, key, PSEUDONYM_HEX_DIGITS)


def short_hash(text: str, key: str = DEFAULT_PSEUDONYM_KEY, digits: int = 10) -> str:
    """``digits`` hexadecimal digits of HMAC-SHA256(key, text): a name that reveals nothing of ``text``."""
    return hmac.new(key.encode(), str(text).encode(), hashlib.sha256).hexdigest()[:digits]


def file_label(relative_path: str, key: str = DEFAULT_PSEUDONYM_KEY) -> str:
    """The name a raw file goes by in messages and outputs: ``"file-"`` + a hash of its relative path."""
    return "file-" + short_hash(str(relative_path).replace(os.sep, "/"), key)


def series_label(series_number: int | None, series_uid: str, key: str = DEFAULT_PSEUDONYM_KEY) -> str:
    """The name of a series in messages and outputs: ``"series-<SeriesNumber>-<hash of its UID>"``."""
    number = "x" if series_number is None else str(series_number)
    return f"series-{number}-{short_hash(series_uid, key, 6)}"
