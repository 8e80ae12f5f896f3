"""Choose the CT and the PET series of a mixed study by documented, configurable rules.

Rules (every series gets a recorded reason, chosen or not):

PET
    * not a MIP, secondary capture, localizer or reformat (ImageType, ``excluded_image_types``);
    * attenuation- and decay-corrected: CorrectedImage holds every value of
      ``pet_required_corrections``; where a series has no CorrectedImage,
      AttenuationCorrectionMethod (absent, or one of ``pet_no_attenuation_values``, means not
      corrected) and DecayCorrection (``NONE`` means not corrected) decide; where neither says,
      the series is "correction unknown", and a study whose only candidates are unknown is refused
      as ambiguous (never decided by slice count);
    * an enhanced multi-frame object that repeats the slices (count and z range) of a classic
      series of the same modality is skipped (``prefer_classic``).
CT
    * not a localizer, scout, reformat, MIP or secondary capture (ImageType);
    * axial: the slice normal within ``ct_max_tilt_deg`` of the patient's z axis;
    * the PET's FrameOfReferenceUID;
    * covering the PET: the z ranges overlap by at least ``min_overlap_fraction`` of the shorter one;
    * preference: ConvolutionKernel matching ``ct_kernel_preference`` (earlier entries first),
      then slice thickness (thinnest, or closest to ``ct_thickness_mm`` when set).
Ties of equally ranked series go to the lowest SeriesNumber (recorded). ``overrides`` maps a
study pseudonym to ``{"ct": series label, "pet": series label}`` and wins over every rule.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from colearn_pipeline.dicom.errors import DicomStudyError


@dataclass(frozen=True)
class SelectionRules:
    """Configurable series-selection rules (see the module docstring); defaults mirror conf."""

    excluded_image_types: tuple[str, ...] = (
        "LOCALIZER", "SCOUT", "PROJECTION IMAGE", "REFORMATTED", "MPR", "MIP", "SCREEN SAVE",
    )
    pet_required_corrections: tuple[str, ...] = ("ATTN", "DECY")
    pet_no_attenuation_values: tuple[str, ...] = ("NONE", "NO", "OFF", "NAC", "UNCORRECTED")
    prefer_classic: bool = True
    ct_max_tilt_deg: float = 5.0
    min_overlap_fraction: float = 0.5
    ct_kernel_preference: tuple[str, ...] = ()
    ct_thickness_mm: float | None = None
    overrides: Mapping[str, Mapping[str, str]] = field(default_factory=dict)

    @classmethod
    def from_mapping(cls, conf: Mapping[str, Any] | None) -> SelectionRules:
        """Rules from a conf mapping (unknown keys are an error; lists become tuples)."""
        conf = dict(conf or {})
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(conf) - known
        if unknown:
            raise ValueError(f"unknown series-selection rule(s) {sorted(unknown)}; known: {sorted(known)}")
        values = {k: tuple(str(x).upper() for x in v) if isinstance(v, (list, tuple)) else v for k, v in conf.items()}
        if "ct_kernel_preference" in conf:
            values["ct_kernel_preference"] = tuple(str(x) for x in conf["ct_kernel_preference"] or ())
        return cls(**values)


@dataclass
class SeriesChoice:
    """The chosen pair and one record per series of the study.

    Attributes
    ----------
    ct, pet : SeriesInfo
    records : list of dict
        ``{"series": label, "modality": "CT"|"PT", "chosen": bool, "reason": str}``.
    """

    ct: Any
    pet: Any
    records: list[dict] = field(default_factory=list)

    @property
    def note(self) -> str:
        """The records as one line for a manifest."""
        return "; ".join(
            f"{r['modality']} {r['series']}: {'chosen' if r['chosen'] else 'not chosen'} ({r['reason']})"
            for r in self.records
        )


def pet_correction(info, rules: SelectionRules) -> tuple[str, str]:
    """Whether a PET series is attenuation- and decay-corrected: ``("yes"|"no"|"unknown", why)``."""
    if info.corrected:
        missing = [c for c in rules.pet_required_corrections if c not in info.corrected]
        if missing:
            return "no", f"CorrectedImage lacks {'/'.join(missing)}"
        return "yes", f"CorrectedImage has {'/'.join(rules.pet_required_corrections)}"
    method = info.attenuation_correction_method
    decay_ok = info.decay_correction not in ("", "NONE")
    if method and method.strip().upper() in rules.pet_no_attenuation_values:
        return "no", "no CorrectedImage; AttenuationCorrectionMethod says none"
    if not method:
        return "unknown", "no CorrectedImage and no AttenuationCorrectionMethod"
    if not decay_ok:
        return "no", "no CorrectedImage; DecayCorrection NONE or absent"
    return "yes", "no CorrectedImage; AttenuationCorrectionMethod and DecayCorrection present"


def _excluded(info, rules: SelectionRules) -> str | None:
    hit = [t for t in info.image_type if t in rules.excluded_image_types]
    return f"ImageType {'/'.join(hit)}" if hit else None


def _tilt_deg(info) -> float:
    normal = np.asarray(info.normal, dtype=float)
    norm = np.linalg.norm(normal)
    return 90.0 if norm == 0 else float(np.degrees(np.arccos(min(1.0, abs(normal[2]) / norm))))


def _overlap_fraction(a, b) -> float:
    lo, hi = max(a.z_range_mm[0], b.z_range_mm[0]), min(a.z_range_mm[1], b.z_range_mm[1])
    shorter = min(a.z_range_mm[1] - a.z_range_mm[0], b.z_range_mm[1] - b.z_range_mm[0])
    if shorter <= 0:
        return 1.0 if lo <= hi else 0.0
    return max(0.0, hi - lo) / shorter


def _number(info) -> int:
    return info.series_number if info.series_number is not None else 2**31


def _ct_rank(info, rules: SelectionRules) -> tuple:
    kernel = info.convolution_kernel.upper()
    prefs = [i for i, k in enumerate(rules.ct_kernel_preference) if k.upper() in kernel]
    kernel_rank = prefs[0] if prefs else len(rules.ct_kernel_preference)
    t = info.slice_thickness_mm if info.slice_thickness_mm is not None else np.inf
    thick = abs(t - rules.ct_thickness_mm) if rules.ct_thickness_mm is not None else t
    return (kernel_rank, thick, _number(info))


def _rank_reason(info, rules: SelectionRules, others: list) -> str:
    parts = []
    if rules.ct_kernel_preference:
        rank = _ct_rank(info, rules)[0]
        parts.append(f"kernel preference {rank + 1}" if rank < len(rules.ct_kernel_preference) else "no preferred kernel")
    if info.slice_thickness_mm is not None:
        parts.append(f"slice thickness {info.slice_thickness_mm:g} mm")
    if any(_ct_rank(o, rules)[:2] == _ct_rank(info, rules)[:2] for o in others):
        parts.append("tie broken by lowest SeriesNumber")
    return ", ".join(parts)


def _first_file(study, info) -> str:
    first = sorted(info.files)[0]
    return study.file_labels.get(first, "-")


def _screen_pets(pets: list, rules: SelectionRules, refused: dict) -> tuple[list, list, dict]:
    """Corrected PET candidates, the correction-unknown ones, and why each candidate qualifies."""
    ok, unknown, why_ok = [], [], {}
    for p in pets:
        why = _excluded(p, rules)
        if why:
            refused[id(p)] = why
            continue
        status, why = pet_correction(p, rules)
        if status == "no":
            refused[id(p)] = f"{why}: not attenuation/decay corrected"
        elif status == "unknown":
            refused[id(p)] = f"{why}: correction unknown"
            unknown.append(p)
        else:
            ok.append(p)
            why_ok[id(p)] = why
    _prefer_classic(ok, rules, refused, "PET")
    return ok, unknown, why_ok


def _screen_cts(cts: list, rules: SelectionRules, refused: dict) -> list:
    ok = []
    for c in cts:
        tilt = _tilt_deg(c)
        why = _excluded(c, rules)
        if why is None and tilt > rules.ct_max_tilt_deg:
            why = f"not axial: slice normal {tilt:.1f} deg from the patient z axis (tolerance {rules.ct_max_tilt_deg:g})"
        if why is None and not c.frame_of_reference_uid:
            why = "no FrameOfReferenceUID"
        if why:
            refused[id(c)] = why
        else:
            ok.append(c)
    _prefer_classic(ok, rules, refused, "CT")
    return ok


def _prefer_classic(candidates: list, rules: SelectionRules, refused: dict, modality: str) -> None:
    """Drop an enhanced object that repeats a classic candidate's slices (same count and z range)."""
    if not rules.prefer_classic:
        return
    classic = [s for s in candidates if not s.enhanced]
    for s in [s for s in candidates if s.enhanced]:
        twin = next((c for c in classic if c.n_slices == s.n_slices
                     and np.allclose(c.z_range_mm, s.z_range_mm, atol=0.01)), None)
        if twin is not None:
            refused[id(s)] = f"enhanced multi-frame object beside a classic {modality} series with the same slices ({twin.label}; skipped)"
            candidates.remove(s)


def _pair(study, pets: list, cts: list, rules: SelectionRules, refused: dict):
    """The first PET (lowest SeriesNumber) with an eligible CT, and that CT (best ranked)."""
    for pet in sorted(pets, key=_number):
        same_frame = [c for c in cts if c.frame_of_reference_uid == pet.frame_of_reference_uid]
        covering = [c for c in same_frame if _overlap_fraction(c, pet) >= rules.min_overlap_fraction]
        if covering:
            return pet, min(covering, key=lambda c: _ct_rank(c, rules)), covering
    if cts and not any(c.frame_of_reference_uid == p.frame_of_reference_uid for c in cts for p in pets):
        problem = "PET and CT have different FrameOfReferenceUID (not registered by the scanner)"
    elif cts:
        problem = f"no CT series covers at least {rules.min_overlap_fraction:.0%} of the PET's z range"
    else:
        problem = "no axial CT volume: " + "; ".join(f"{c.label}: {refused[id(c)]}" for c in study_cts(study))
    raise DicomStudyError(study.pseudonym, _first_file(study, pets[0]), problem)


def study_cts(study) -> list:
    return [s for s in study.series.values() if s.modality == "CT"]


def _records(study, ct, pet, refused: dict, why_pet: str, covering: list, rules: SelectionRules) -> list[dict]:
    out = []
    for s in sorted(study.series.values(), key=lambda s: (s.modality, _number(s), s.label)):
        if s is ct:
            reason = f"axial, same frame of reference as the PET, covers {_overlap_fraction(s, pet):.0%} of the shorter"
            extra = _rank_reason(s, rules, [c for c in covering if c is not s])
            reason += f"; {extra}" if extra else ""
        elif s is pet:
            reason = why_pet
        elif id(s) in refused:
            reason = refused[id(s)]
        elif s.modality == "PT":
            reason = "corrected too, but a lower SeriesNumber (or one with a matching CT) was chosen"
        elif s.frame_of_reference_uid != pet.frame_of_reference_uid:
            reason = "another FrameOfReferenceUID than the chosen PET"
        elif s not in covering:
            reason = f"covers only {_overlap_fraction(s, pet):.0%} of the PET's z range"
        else:
            reason = "ranked lower: " + (_rank_reason(s, rules, []) or "higher SeriesNumber")
        out.append({"series": s.label, "modality": s.modality, "chosen": s is ct or s is pet, "reason": reason})
    return out


def _override(study, wanted: Mapping[str, str]) -> SeriesChoice:
    by_label = {s.label: s for s in study.series.values()}
    picked = {}
    for role, modality in (("ct", "CT"), ("pet", "PT")):
        info = by_label.get(str(wanted.get(role, "")))
        if info is None or info.modality != modality:
            raise DicomStudyError(study.pseudonym, "-", f"selection override names {role} series "
                                  f"'{wanted.get(role)}', which is not a {modality} series of this study")
        picked[role] = info
    records = [{"series": s.label, "modality": s.modality, "chosen": s in picked.values(),
                "reason": "per-study override in conf" if s in picked.values() else "not named by the override"}
               for s in study.series.values()]
    return SeriesChoice(picked["ct"], picked["pet"], records)


def choose_series(study, rules: SelectionRules | Mapping[str, Any] | None = None) -> SeriesChoice:
    """Choose the CT and PET series of ``study`` by ``rules`` and record a reason for every series.

    Parameters
    ----------
    study : StudyFiles
    rules : SelectionRules or mapping, optional
        Mapping keys are the fields of :class:`SelectionRules`; default the defaults.

    Returns
    -------
    SeriesChoice

    Raises
    ------
    DicomStudyError
        No CT, no PET, no corrected PET, only PET series whose correction is unknown
        (ambiguous), or no axial CT in the PET's frame of reference that covers it.
    """
    rules = rules if isinstance(rules, SelectionRules) else SelectionRules.from_mapping(rules)
    cts, pets = study_cts(study), [s for s in study.series.values() if s.modality == "PT"]
    if not cts and not pets:
        raise DicomStudyError(study.pseudonym, "-", "study has no CT and no PET image series")
    if not pets or not cts:
        have, lack = ("CT", "PET") if cts else ("PET", "CT")
        info = (cts or pets)[0]
        raise DicomStudyError(study.pseudonym, _first_file(study, info),
                              f"study has a {have} series ({info.n_slices} slices) but no {lack} series")
    if study.pseudonym in rules.overrides:
        return _override(study, rules.overrides[study.pseudonym])
    refused: dict = {}
    ok_pets, unknown, why_ok = _screen_pets(pets, rules, refused)
    if not ok_pets:
        if unknown:
            problem = ("ambiguous PET: no series says it is attenuation corrected (no CorrectedImage, no "
                       f"AttenuationCorrectionMethod) among {', '.join(p.label for p in unknown)}; name one in the "
                       "selection overrides")
        else:
            problem = "no attenuation- and decay-corrected PET series: " + "; ".join(
                f"{p.label}: {refused[id(p)]}" for p in pets)
        raise DicomStudyError(study.pseudonym, _first_file(study, pets[0]), problem)
    ok_cts = _screen_cts(cts, rules, refused)
    pet, ct, covering = _pair(study, ok_pets, ok_cts, rules, refused)
    why_pet = why_ok[id(pet)] + (f"; lowest SeriesNumber of {len(ok_pets)} corrected PET series" if len(ok_pets) > 1 else "")
    return SeriesChoice(ct, pet, _records(study, ct, pet, refused, why_pet, covering, rules))


def select_ct_pet(study, root: str | None = None, rules: SelectionRules | Mapping[str, Any] | None = None):
    """Pick the CT and the PET series of a study (:func:`choose_series`).

    Returns
    -------
    (SeriesInfo, SeriesInfo, str)
        CT, PET, and the recorded reasons as one line (for the manifest); ``root`` is unused
        (files are named by label) and kept for callers that pass it.
    """
    choice = choose_series(study, rules)
    return choice.ct, choice.pet, choice.note
