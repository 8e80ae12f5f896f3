"""Expert contours on real data (issue 23): the three IBSI STS limb PET-CT studies and their GTV_Mass RTSTRUCTs.

Each study folder holds two structure sets, one drawn on the CT (``GTV_Mass_CT``) and one on the PET
(``GTV_Mass_PET``); the expert path must take the CT's. Its GTV is rasterised on the CT grid, checked
against the PET's GTV on the PET grid, exported as a DICOM SEG and read back through the same path, and
compared with the paper's 40 %-of-peak tumour seeded at the GTV's centre (SUV on the CT grid). The limbs are
not thoraces (preprocess refuses them: tests/test_preprocess_quality.py), so the functions are called
directly. The Dice figures are to report, not targets: sarcomas are necrotic and heterogeneous.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import yaml
from real_data import IBSI_STS_STUDIES, ibsi_sts_root

from colearn_pipeline.dicom.discovery import discover, select_ct_pet
from colearn_pipeline.dicom.grid import resample_to_reference
from colearn_pipeline.dicom.series import read_series
from colearn_pipeline.groundtruth import LABELS, segment_tumours
from colearn_pipeline.groundtruth.agreement import class_agreement
from colearn_pipeline.groundtruth.expert import (
    check_rules,
    expert_masks,
    find_expert_objects,
)
from colearn_pipeline.suv import suv_conversion, to_suv

STUDIES = IBSI_STS_STUDIES
CONF = Path(__file__).resolve().parents[1] / "conf" / "base" / "parameters_preprocess.yml"
#: The CT and PET GTVs are drawn separately and rasterised on grids of 1 mm and 5 mm: their volumes agree
#: to this (measured: within 2 %).
GTV_VOLUME_TOLERANCE = 0.05
#: A floor under the 40 %-of-peak tumour's Dice with the expert GTV (0.51-0.87 on the PET grid before).
MIN_DERIVED_DICE = 0.3


@pytest.fixture(scope="module")
def sts(tmp_path_factory) -> Path:
    """The unpacked IBSI STS studies (tests/data/ibsi_sts: STS_00N/{CT,PET}/{image,mask})."""
    return ibsi_sts_root(tmp_path_factory)


def _rules():
    return check_rules(yaml.safe_load(CONF.read_text())["preprocess"]["labels"]["expert"]["roi_classes"])


def _study(root: Path, name: str):
    """The study's CT and PET (as preprocess chooses them) and the files discovery set aside."""
    found = discover(root / name)
    (pseudonym, files), = found.studies.items()
    ct_info, pet_info, _ = select_ct_pet(files, str(root / name))
    aside = [str(root / name / found.file_map[label]) for label, _ in files.skipped]
    return pseudonym, ct_info, pet_info, aside


def _gtv(aside, info, datasets, expect_folder: str):
    objects = find_expert_objects(aside, info.series_uid, info.frame_of_reference_uid)
    found_objects = [(Path(o.path).parent.parent.name, o.kind, o.match) for o in objects]
    assert found_objects == [(expect_folder, "RTSTRUCT", "series")]
    found = expert_masks(objects, datasets, _rules())
    assert found.unmapped == [] and list(found.masks) == ["tumour"], found.rois
    assert found.notes == []
    return found.masks["tumour"]


@pytest.fixture(scope="module")
def results(sts):
    out = {}
    for name in STUDIES:
        pseudonym, ct_info, pet_info, aside = _study(sts, name)
        ct = read_series(ct_info.files, pseudonym, root=sts / name)
        pet = read_series(pet_info.files, pseudonym, root=sts / name)
        gtv_ct = _gtv(aside, ct_info, ct.datasets, "CT")
        gtv_pet = _gtv(aside, pet_info, pet.datasets, "PET")
        suv = to_suv(pet.array, suv_conversion(pet.datasets, source=pseudonym))
        suv_ct = resample_to_reference(pet.to_sitk(suv.astype(np.float32)), ct.to_sitk(), "linear", 0.0)
        suv_ct = sitk.GetArrayFromImage(suv_ct)
        seed = tuple(np.argwhere(gtv_ct).mean(axis=0))
        tumour, info = segment_tumours(suv_ct, [seed], ct.spacing_xyz_mm)
        scores = class_agreement(np.where(tumour, LABELS["tumour"], 0), np.where(gtv_ct, LABELS["tumour"], 0),
                                 ct.spacing_xyz_mm, ["tumour"])["tumour"]
        out[name] = {"ct": ct, "gtv_ct": gtv_ct, "gtv_pet": gtv_pet, "pet": pet, "scores": scores, "info": info[0],
                     "aside": aside, "ct_info": ct_info}
        ml_ct = gtv_ct.sum() * np.prod(ct.spacing_xyz_mm) / 1000
        ml_pet = gtv_pet.sum() * np.prod(pet.spacing_xyz_mm) / 1000
        print(f"{name}: GTV {ml_ct:.1f} mL (CT grid; PET GTV {ml_pet:.1f} mL on the PET grid), "
              f"peak SUV {info[0]['peak_suv']:.1f}, fraction "
              f"{info[0]['peak_fraction']:.2f}, Dice {scores['dice']:.3f}, volume ratio {scores['volume_ratio']:.2f}, "
              f"MSD {scores['mean_surface_distance_mm']:.1f} mm")
    return out


@pytest.mark.slow
@pytest.mark.parametrize("name", STUDIES)
def test_real_gtv_on_the_ct_grid_matches_the_pet_gtv(results, name):
    r = results[name]
    ml_ct = r["gtv_ct"].sum() * np.prod(r["ct"].spacing_xyz_mm) / 1000
    ml_pet = r["gtv_pet"].sum() * np.prod(r["pet"].spacing_xyz_mm) / 1000
    assert ml_ct > 10.0
    assert abs(ml_ct - ml_pet) <= GTV_VOLUME_TOLERANCE * ml_pet, (ml_ct, ml_pet)
    # every slice the CT contours cross holds GTV: contours matched the CT positions
    z = np.flatnonzero(r["gtv_ct"].any(axis=(1, 2)))
    assert np.array_equal(z, np.arange(z[0], z[-1] + 1))


@pytest.mark.slow
@pytest.mark.parametrize("name", STUDIES)
def test_real_derived_tumour_against_the_expert_gtv(results, name):
    scores = results[name]["scores"]
    assert scores["dice"] >= MIN_DERIVED_DICE, scores
    assert scores["volume_ratio"] > 0 and scores["mean_surface_distance_mm"] > 0


@pytest.mark.slow
@pytest.mark.parametrize("name", STUDIES)
def test_real_gtv_as_seg_reads_back_through_the_same_path(results, name, tmp_path):
    from colearn_pipeline.inference.seg import build_seg, write_seg

    r = results[name]
    labels = np.where(r["gtv_ct"], LABELS["tumour"], 0).astype(np.uint8)
    seg = build_seg(labels, r["ct"].datasets, algorithm=None, algorithm_type="MANUAL")
    path = write_seg(seg, tmp_path / "gtv.seg.dcm")
    ct_info = r["ct_info"]
    objects = find_expert_objects([*r["aside"], str(path)], ct_info.series_uid, ct_info.frame_of_reference_uid)
    assert sorted(o.kind for o in objects) == ["RTSTRUCT", "SEG"]  # both reference the CT series
    (obj,) = [o for o in objects if o.kind == "SEG"]
    found = expert_masks([obj], r["ct"].datasets, _rules())
    assert np.array_equal(found.masks["tumour"], r["gtv_ct"])
