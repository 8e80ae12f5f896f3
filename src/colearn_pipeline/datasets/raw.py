"""The raw cohort as catalog datasets: a DICOM folder tree read by tags, and the diagnostic reports.

Both are read-only: ``save`` only checks that the writer (the phantom pipeline, which writes the
files itself) wrote them where the catalog says, so that Kedro orders the pipelines by data.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
from pathlib import Path
from typing import Any

from kedro.io import AbstractDataset, DatasetError

from colearn_pipeline.dicom.discovery import Discovery, discover


class DicomTree:
    """A DICOM folder tree; :meth:`discover` scans the headers once per pseudonym key and caches them.

    Attributes
    ----------
    root : str
    """

    def __init__(self, root: str, cache: dict) -> None:
        self.root = root
        self._cache = cache

    def discover(self, key: str) -> Discovery:
        """Studies and series by tags (:func:`colearn_pipeline.dicom.discovery.discover`), cached."""
        if key not in self._cache:
            self._cache[key] = discover(self.root, key=key)
        return self._cache[key]


def _check_written_here(data: Any, path: str, what: str) -> None:
    if Path(os.fspath(data)).resolve() != Path(path).resolve():
        raise DatasetError(f"{what}: the writer wrote '{os.fspath(data)}', but the catalog reads '{path}'")


class DicomTreeDataset(AbstractDataset[os.PathLike, DicomTree]):
    """The raw DICOM tree (any layout; files are found by their tags).

    ``load`` returns a :class:`DicomTree` whose header scan is shared by the nodes of one run.
    ``save`` takes the folder a generator wrote and checks it is this one (raw data is never copied).

    Parameters
    ----------
    path : str
        The folder, e.g. ``data/01_raw/dicom``.
    metadata : dict, optional
    """

    def __init__(self, path: str, metadata: dict[str, Any] | None = None) -> None:
        self._path = str(path)
        self._cache: dict = {}
        self.metadata = metadata

    def load(self) -> DicomTree:
        if not Path(self._path).is_dir():  # chained OSError: the run guard tells it as a message (runlock.py)
            is_file = Path(self._path).exists()
            cause = (NotADirectoryError(errno.ENOTDIR, "the DICOM folder is a file", self._path) if is_file
                     else FileNotFoundError(errno.ENOENT, "no DICOM folder", self._path))
            raise DatasetError(f"no DICOM folder at '{self._path}'") from cause
        return DicomTree(self._path, self._cache)

    def save(self, data: os.PathLike | str) -> None:
        _check_written_here(data, self._path, "DicomTreeDataset")
        self._cache.clear()

    def _exists(self) -> bool:
        return Path(self._path).is_dir()

    def _describe(self) -> dict[str, Any]:
        return {"path": self._path}


class ReportsDataset(AbstractDataset[os.PathLike, dict]):
    """Diagnostic reports, ``*.json`` with ``study_instance_uid`` and ``findings`` (``position_mm``, ``kind``).

    ``load`` returns ``{"findings": {uid: [finding, ...]}, "digests": {uid: sha256},
    "files": {uid: [report file, ...]}, "problems": [(file, reason), ...]}``; reports of the same
    study are concatenated; a missing folder means no reports; a UTF-8 byte-order mark (as some
    Windows editors write) is read. Problems name the report file only.
    """

    def __init__(self, path: str, metadata: dict[str, Any] | None = None) -> None:
        self._path = str(path)
        self.metadata = metadata

    def load(self) -> dict[str, Any]:
        findings: dict[str, list] = {}
        digests: dict[str, Any] = {}
        problems: list[tuple[str, str]] = []
        files: dict[str, list[str]] = {}
        folder = Path(self._path)
        for path in sorted(folder.glob("*.json")) if folder.is_dir() else []:
            try:
                raw = path.read_bytes()
                report = json.loads(raw.decode("utf-8-sig"))
                uid = str(report["study_instance_uid"]).strip()
                items = report.get("findings") or []
                if not isinstance(items, list):
                    raise TypeError("'findings' is not a list")
            except (OSError, ValueError, KeyError, TypeError) as exc:
                problems.append((f"reports/{path.name}", f"unusable report ({type(exc).__name__}: {exc})"))
                continue
            findings.setdefault(uid, []).extend(items)
            files.setdefault(uid, []).append(f"reports/{path.name}")
            digests.setdefault(uid, hashlib.sha256())
            digests[uid].update(raw)
        return {"findings": findings, "digests": {u: d.hexdigest() for u, d in digests.items()}, "files": files,
                "problems": problems}

    def save(self, data: os.PathLike | str) -> None:
        _check_written_here(data, self._path, "ReportsDataset")

    def _exists(self) -> bool:
        return Path(self._path).is_dir()

    def _describe(self) -> dict[str, Any]:
        return {"path": self._path}
