"""Preprocess on a phantom cohort stored as a real archive: compressed transfer syntaxes, enhanced
multi-frame objects and clutter (scout, thick CT, coronal reformat, NAC PET, MIP capture, RTSTRUCT).

Every study must come out ok (none wrongly quarantined), the cluttered ones with the axial classic CT
and the attenuation-corrected PET chosen and every candidate's reason in the manifest. The chosen CT
is the one the phantom's truth was drawn on: the labels stage compares with the truth on the CT grid.
"""

from __future__ import annotations

import pytest
from dicom_fixtures import run_preprocess_catalog

from colearn_pipeline.phantom.generate import generate_cohort

pytestmark = pytest.mark.slow

SYNTAXES = ["rle", "jpeg_ls", "jpeg2000", "deflate"]
ARCHIVE = {"archive_transfer_syntaxes": SYNTAXES, "archive_enhanced_every": 4, "archive_clutter_every": 2}


@pytest.fixture(scope="module")
def archive(tmp_path_factory):
    raw = tmp_path_factory.mktemp("raw")
    summary = generate_cohort(raw, n_studies=4, seed=7, size="tiny", workers=2, **ARCHIVE)
    result = run_preprocess_catalog(raw, tmp_path_factory.mktemp("out"), workers=2)
    rows = {r["pseudonym"]: r for r in result["manifest"]["studies"]}
    return {"studies": summary["studies"], "rows": rows, **result}


def test_every_archived_study_is_preprocessed(archive):
    summary = archive["manifest"]["summary"]
    assert summary["ok"] == 4 and summary["quarantined"] == 0 and summary["failed"] == 0, archive["rows"]
    for study in archive["studies"]:
        row = archive["rows"][study["pseudonym"]]
        assert int(row["ct_shape_zyx"][0]) == study["n_slices"], row  # the CT series of the truth
        assert row["dice_lung"] > 0.9, row


def test_cluttered_studies_pick_the_axial_ct_and_the_corrected_pet(archive):
    cluttered = [s for s in archive["studies"] if s["index"] % 2 == 1]
    assert len(cluttered) == 2
    for study in cluttered:
        row = archive["rows"][study["pseudonym"]]
        records = row["series_records"]
        chosen = {r["modality"]: r for r in records if r["chosen"]}
        assert {r["series"] for r in chosen.values()} == {row["ct_series"], row["pet_series"]}
        assert chosen["CT"]["reason"].startswith("axial, same frame of reference as the PET")
        assert chosen["PT"]["reason"] == "CorrectedImage has ATTN/DECY"
        refused = " | ".join(r["reason"] for r in records if not r["chosen"])
        for why in ("ImageType LOCALIZER", "ImageType REFORMATTED", "ranked lower: slice thickness",
                    "CorrectedImage lacks ATTN: not attenuation/decay corrected"):
            assert why in refused, refused
        assert len(records) == 6, records
        reasons = sorted(s["reason"].split(" (")[0] for s in row["skipped_files"])
        assert reasons == ["not an image", "secondary capture / screenshot"], row["skipped_files"]
        assert all(s["file"].startswith("file-") for s in row["skipped_files"])
        assert row["series_selection"].startswith(f"CT {row['ct_series']} of 4 CT, PET {row['pet_series']} of 2 PET")


def test_uncluttered_studies_record_their_single_pair(archive):
    for study in archive["studies"]:
        if study["index"] % 2 == 0:
            row = archive["rows"][study["pseudonym"]]
            assert [r["chosen"] for r in row["series_records"]] == [True, True] and row["n_skipped_files"] == 0
