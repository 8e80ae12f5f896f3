"""Per-study partitions of one preprocess stage: data files plus a record, committed per study.

Layout of a stage dataset (``path``): one file per study and member (``members``: name ->
relative pattern with ``{pseudonym}``) and one record per study under ``records_dir``
(``<pseudonym>.json``: status, reason, file, fingerprint, the stage's manifest fields). A study's
outputs count only when its record says ``ok`` and every member file exists, so a crash between two
files never passes half an update off as whole: the old record is removed before the new files are
moved in, and the new record is written last.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from kedro.io import AbstractDataset, DatasetError

from colearn_pipeline.datasets._atomic import atomic_move, atomic_write

#: Statuses of a study in a stage.
OK, QUARANTINED, FAILED, UNCHANGED = "ok", "quarantined", "failed", "unchanged"


def _load_member(path: str) -> Any:
    if path.endswith((".nii", ".nii.gz")):
        import SimpleITK as sitk

        return sitk.ReadImage(path)
    if path.endswith(".npz"):
        from colearn_pipeline.datasets.npz import NpzDataset

        return NpzDataset(path).load()
    raise DatasetError(f"no loader for '{path}'")


@dataclass(frozen=True)
class StudyPartition:
    """One study's stored outputs of a stage; calling it loads them (one study in memory at a time).

    Attributes
    ----------
    pseudonym : str
    paths : dict
        Member name -> file path.
    record : dict
        ``status``, ``reason``, ``file``, ``fingerprint``, ``row`` (manifest fields).
    """

    pseudonym: str
    paths: Mapping[str, str]
    record: Mapping[str, Any]

    def load(self, member: str | None = None) -> Any:
        """Load one member (the only one when ``member`` is None)."""
        if member is None:
            if len(self.paths) != 1:
                raise DatasetError(f"{self.pseudonym}: name one of the members {sorted(self.paths)}")
            (member,) = self.paths
        return _load_member(self.paths[member])

    def __call__(self) -> Any:
        """The data: the single member, or ``{member: data}``."""
        if len(self.paths) == 1:
            return self.load()
        return {m: self.load(m) for m in self.paths}

    @property
    def fingerprint(self) -> str | None:
        return self.record.get("fingerprint")

    @property
    def status(self) -> str:
        return str(self.record.get("status"))


class StudyPartitions(dict):
    """``{pseudonym: StudyPartition}`` of the studies whose files are on disk (what a PartitionedDataset gives).

    ``records`` holds every study's record, also those without files (quarantined ones).
    """

    def __init__(self, partitions: Mapping[str, StudyPartition], records: Mapping[str, Mapping]) -> None:
        super().__init__(partitions)
        self.records = dict(records)


@dataclass
class StudyOutput:
    """What a stage node returns per study; the dataset commits it.

    ``status`` ok (``staged`` holds member -> finished file to move in), quarantined (bad input:
    the study's files of this stage are removed), failed (our side failed, e.g. a dead worker:
    earlier files are kept, the record says failed) or unchanged (nothing is written).
    """

    status: str
    fingerprint: str | None = None
    reason: str = ""
    file: str = ""
    row: dict[str, Any] = field(default_factory=dict)
    staged: dict[str, str] = field(default_factory=dict)

    def record(self, pseudonym: str) -> dict[str, Any]:
        return {"pseudonym": pseudonym, "status": self.status, "reason": self.reason, "file": self.file,
                "fingerprint": self.fingerprint, "row": self.row}


class StudyPartitionsDataset(AbstractDataset[Mapping[str, StudyOutput], StudyPartitions]):
    """A folder of per-study partitions of one stage, loaded lazily and committed study by study.

    Parameters
    ----------
    path : str
        Folder of the data files.
    members : dict, optional
        Member name -> file pattern relative to ``path`` with ``{pseudonym}``, e.g.
        ``{"ct_hu": "ct_hu/{pseudonym}.nii.gz"}``; none for a stage that keeps records only.
    records_dir : str
        Folder of the per-study records (``<pseudonym>.json``); a relative one is relative to
        ``path`` (Kedro makes ``path`` absolute against the project root, but not this key).
    metadata : dict, optional
        Free-form metadata (Kedro-Viz).

    Notes
    -----
    ``save`` takes ``{pseudonym: StudyOutput}`` for every study of the cohort; the files and
    records of studies not in it (gone from the raw data) are removed. A ``failed`` study keeps its
    earlier files. Staged files are moved (renamed) into place; their staging folder is removed.
    """

    def __init__(self, path: str, records_dir: str, members: Mapping[str, str] | None = None,
                 metadata: dict[str, Any] | None = None) -> None:
        self._path = PurePosixPath(str(path).removeprefix("file://"))
        self._records = self._path / PurePosixPath(str(records_dir).removeprefix("file://"))
        self._members = dict(members or {})
        for name, pattern in self._members.items():
            if "{pseudonym}" not in pattern:
                raise DatasetError(f"member '{name}': pattern '{pattern}' lacks {{pseudonym}}")
        self.metadata = metadata

    def _paths(self, pseudonym: str) -> dict[str, str]:
        return {m: str(self._path / p.format(pseudonym=pseudonym)) for m, p in self._members.items()}

    def _record_path(self, pseudonym: str) -> Path:
        return Path(self._records) / f"{pseudonym}.json"

    def read_records(self) -> dict[str, dict]:
        """Every study's record, by pseudonym."""
        folder = Path(self._records)
        out = {}
        for path in sorted(folder.glob("*.json")) if folder.is_dir() else []:
            try:
                out[path.stem] = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                continue  # an unreadable record counts as none: the study is recomputed
        return out

    def _unrecorded(self, records: Mapping[str, dict]) -> list[str]:
        """Studies whose files are on disk without a record (put there by hand, or an interrupted commit)."""
        if not self._members:
            return []
        pattern = next(iter(self._members.values()))
        head, tail = pattern.split("{pseudonym}", 1)
        found = Path(self._path).glob(pattern.replace("{pseudonym}", "*"))
        names = {str(p.relative_to(Path(self._path)))[len(head):-len(tail) or None] for p in found}
        return sorted(n for n in names if n not in records)

    def load(self) -> StudyPartitions:
        """Records of every study, and a lazy partition for each study whose files are all on disk.

        Files without a record are partitions too (with an empty record and no fingerprint, so a
        stage recomputes them), e.g. model input placed in ``data/05_model_input`` by hand.
        """
        records = self.read_records()
        partitions = {}
        for pseudonym in [*records, *self._unrecorded(records)]:
            record = records.get(pseudonym, {"status": None, "fingerprint": None, "row": {}})
            paths = self._paths(pseudonym)
            if record.get("status") in (OK, FAILED, None) and all(os.path.isfile(p) for p in paths.values()):
                partitions[pseudonym] = StudyPartition(pseudonym, paths, record)
        return StudyPartitions(partitions, records)

    def save(self, data: Mapping[str, StudyOutput]) -> None:
        """Commit each study (old record out, files in, new record last), then drop studies not in ``data``."""
        old = self.read_records()
        for pseudonym, out in data.items():
            self._commit(pseudonym, out, old.get(pseudonym))
        for pseudonym in sorted(set(old) - set(data)):
            self._remove(pseudonym)

    def _commit(self, pseudonym: str, out: StudyOutput, old: Mapping | None) -> None:
        if out.status == UNCHANGED:
            if old is None:
                raise DatasetError(f"{pseudonym}: marked unchanged but has no stored record")
            return
        record = out.record(pseudonym)
        if out.status == FAILED:
            if old and old.get("status") == FAILED:
                old = old.get("previous")
            record["previous"] = dict(old) if old else None  # the earlier outputs, which stay where they are
            self._write_record(pseudonym, record)
            return
        self._record_path(pseudonym).unlink(missing_ok=True)
        paths = self._paths(pseudonym)
        if out.status == OK:
            if set(out.staged) != set(paths):
                raise DatasetError(f"{pseudonym}: staged members {sorted(out.staged)} != {sorted(paths)}")
            for member, src in out.staged.items():
                atomic_move(src, paths[member])
            _remove_empty_parent(out.staged.values())
        else:
            for path in paths.values():
                Path(path).unlink(missing_ok=True)
        self._write_record(pseudonym, record)

    def _write_record(self, pseudonym: str, record: dict) -> None:
        text = json.dumps(record, indent=1, sort_keys=True, default=str)
        atomic_write(self._record_path(pseudonym), lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))

    def _remove(self, pseudonym: str) -> None:
        self._record_path(pseudonym).unlink(missing_ok=True)
        for path in self._paths(pseudonym).values():
            Path(path).unlink(missing_ok=True)

    def _exists(self) -> bool:
        return Path(self._records).is_dir()

    def _describe(self) -> dict[str, Any]:
        return {"path": str(self._path), "records_dir": str(self._records), "members": self._members}


def _remove_empty_parent(paths, levels: int = 3) -> None:
    """Remove the staging folders of moved files while they are empty (study, stage, run)."""
    for parent in {Path(p).parent for p in paths}:
        for folder in [parent, *parent.parents][:levels]:
            try:
                folder.rmdir()
            except OSError:
                break
