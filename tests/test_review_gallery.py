"""The review gallery (issue 23): one static HTML page per preprocessed cohort, a strip of slices per study.

- Slice choice on a hand-made label volume: apex, carina (where the airway splits), heart (the
  widest mediastinum below the carina), lung bases and each tumour, in either z direction.
- End to end on a tiny phantom cohort (3 studies: one given a report finding in the middle of a
  lung, a cold spot that needs review; one pelvis, not a thorax; one ok) through the preprocess
  pipeline: every picture and link of ``index.html`` is a non-empty PNG beside it, the study that
  needs review comes first with its reason, and no patient identifier of the DICOM reaches the page.
"""

from __future__ import annotations

import json
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from dicom_fixtures import run_preprocess_catalog

from colearn_pipeline.groundtruth import LABELS
from colearn_pipeline.phantom.generate import generate_cohort
from colearn_pipeline.review import choose_slices, gallery_html, review_order

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
#: DICOM attributes that identify a patient or study; none may reach the gallery.
IDENTIFIERS = ("PatientName", "PatientID", "PatientBirthDate", "StudyInstanceUID", "AccessionNumber",
               "SeriesInstanceUID")


def _volume() -> tuple[np.ndarray, np.ndarray]:
    """Lungs on slices 2..20 (+z superior), airway one tube above slice 14 and two below, heart widest at 8."""
    labels = np.zeros((24, 40, 40), np.uint8)
    labels[2:21, 5:35, 4:16] = LABELS["lung"]
    labels[2:21, 5:35, 24:36] = LABELS["lung"]
    labels[4:15, 10:30, 17:23] = LABELS["mediastinum"]
    labels[8, 8:32, 16:24] = LABELS["mediastinum"]
    labels[5, 20:23, 8:11] = LABELS["tumour"]
    labels[17:19, 12:15, 30:33] = LABELS["tumour"]
    labels[17, 15, 30:34] = LABELS["tumour"]  # its largest cross-section
    airway = np.zeros_like(labels, bool)
    airway[15:23, 18:21, 19:21] = True
    airway[10:15, 18:21, 17:18] = True
    airway[10:15, 18:21, 22:23] = True
    return labels, airway


def test_slices_apex_carina_heart_bases_and_tumours():
    labels, airway = _volume()
    chosen = dict(choose_slices(labels, superior_at_high_z=True, airway_zyx=airway))
    assert chosen == {"apex": 19, "carina": 14, "heart": 8, "lung bases": 3, "tumour 1": 17, "tumour 2": 5}
    flipped = dict(choose_slices(labels[::-1], superior_at_high_z=False, airway_zyx=airway[::-1]))
    assert flipped == {k: 23 - v for k, v in chosen.items()}
    no_airway = dict(choose_slices(labels, superior_at_high_z=True, max_tumour_slices=1))
    assert no_airway["carina"] == 20 - round(0.3 * 18) and "tumour 2" not in no_airway


def test_slices_without_lungs_are_evenly_spaced():
    chosen = choose_slices(np.zeros((21, 8, 8), np.uint8), superior_at_high_z=True)
    assert [z for _, z in chosen] == [16, 12, 8, 4]  # superior first
    few = np.zeros((21, 8, 8), np.uint8)
    few[10, 2:6, 2:6] = LABELS["lung"]  # gas in a pelvis: one "lung" level, too few to show alone
    assert len(choose_slices(few, superior_at_high_z=True)) == 5


def test_order_and_page_escape_what_they_show():
    rows = [{"pseudonym": "study-b", "status": "ok", "reason": ""},
            {"pseudonym": "study-c", "status": "quarantined", "reason": "not a thorax: <PELVIS>"},
            {"pseudonym": "study-a", "status": "quarantined", "reason": "needs review: finding 0: cold"}]
    assert [r["pseudonym"] for r in review_order(rows)] == ["study-a", "study-c", "study-b"]
    page = gallery_html(rows, {"study-b": "study-b.png"})
    assert "&lt;PELVIS&gt;" in page and "<PELVIS>" not in page
    assert page.index('id="study-a"') < page.index('id="study-c"') < page.index('id="study-b"')
    assert page.count("<img ") == 1


def test_gallery_node_runs_before_the_outcome_check():
    """A refused run (too many studies set aside) still leaves the page a person needs to see why."""
    from colearn_pipeline.pipelines.preprocess import create_pipeline

    names = [n.name for n in create_pipeline().nodes]
    assert names.index("write_manifest") < names.index("build_review_gallery") < names.index("check_preprocess_outcome")


class _Links(HTMLParser):
    def __init__(self):
        super().__init__()
        self.images, self.links, self.items = [], [], []
        self._in_item = False

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "img":
            self.images.append(attrs["src"])
        elif tag == "a":
            self.links.append(attrs["href"])
        self._in_item = self._in_item or tag == "li"

    def handle_endtag(self, tag):
        self._in_item = self._in_item and tag != "li"

    def handle_data(self, data):
        if self._in_item and data.strip():
            self.items.append(data.strip())


def _add_cold_finding(raw: Path, truth: Path) -> None:
    """A report finding at the middle of the study's truth lungs: no uptake to grow from."""
    info = json.loads((truth / "study.json").read_text())
    image = sitk.ReadImage(str(truth / "labels.nii.gz"))
    lung = np.argwhere(sitk.GetArrayFromImage(image) == LABELS["lung"])
    z, y, x = lung[np.argmin(np.abs(lung - lung.mean(axis=0)).sum(axis=1))]
    position = image.TransformIndexToPhysicalPoint((int(x), int(y), int(z)))
    report = raw / info["report"]
    data = json.loads(report.read_text())
    data["findings"].insert(0, {"text": "finding", "kind": "primary", "position_mm": [float(v) for v in position]})
    report.write_text(json.dumps(data))


@pytest.fixture(scope="module")
def gallery(tmp_path_factory):
    raw = tmp_path_factory.mktemp("phantom") / "01_raw"
    generate_cohort(raw, n_studies=3, seed=3, size="tiny", workers=1, non_thorax_every=3)
    truths = sorted((raw / "phantom_truth").iterdir(),
                    key=lambda p: json.loads((p / "study.json").read_text())["index"])
    _add_cold_finding(raw, truths[0])
    out = tmp_path_factory.mktemp("out")
    result = run_preprocess_catalog(raw, out, workers=0, manifest={"max_quarantined_fraction": 1.0})
    headers = [pydicom.dcmread(p, stop_before_pixels=True) for p in (raw / "dicom").rglob("*") if p.is_file()]
    identifiers = {str(h.get(k)) for h in headers for k in IDENTIFIERS if str(h.get(k) or "").strip()}
    return {"rows": result["manifest"]["studies"], "review": out / "08_reporting" / "review",
            "identifiers": identifiers, "preview": out / "08_reporting" / "review_first_study.png"}


@pytest.mark.slow
def test_gallery_links_resolve_to_pngs_beside_the_page(gallery):
    page = gallery["review"] / "index.html"
    parser = _Links()
    parser.feed(page.read_text(encoding="utf-8"))
    drawable = [r for r in gallery["rows"] if r["stage"] not in ("read_series", "suv", "pet_to_ct")]
    assert len(parser.images) == len(drawable) == 3, [r["reason"] for r in gallery["rows"]]
    for target in {*parser.images, *(h for h in parser.links if not h.startswith("#"))}:
        path = (page.parent / target).resolve()
        assert path.parent == page.parent.resolve(), target
        assert path.read_bytes()[:8] == PNG_SIGNATURE and path.stat().st_size > 10_000, target
    assert sorted(p.name for p in gallery["review"].glob("*.png")) == sorted(parser.images)
    assert gallery["preview"].read_bytes()[:8] == PNG_SIGNATURE


@pytest.mark.slow
def test_needs_review_study_listed_first_with_its_reason(gallery):
    rows = {r["pseudonym"]: r for r in gallery["rows"]}
    review = [p for p, r in rows.items() if r["reason"].startswith("needs review")]
    assert len(review) == 1, [(r["status"], r["reason"]) for r in rows.values()]
    assert any(r["reason"].startswith("not a thorax") for r in rows.values())
    assert any(r["status"] == "ok" for r in rows.values())
    parser = _Links()
    parser.feed((gallery["review"] / "index.html").read_text(encoding="utf-8"))
    assert parser.items[0] == review[0]
    assert parser.items[1].startswith("quarantined: " + rows[review[0]]["reason"]), parser.items[:2]
    assert parser.images[0] == f"{review[0]}.png"
    text = (gallery["review"] / "index.html").read_text(encoding="utf-8")
    section = text[text.index(f'<section id="{review[0]}"'):text.index("</section>")]
    assert "lung and mediastinum figures from the stored lung and mediastinum masks" in section  # none in the manifest
    lung_ml = float(section.split("<td>")[1].split("</td>")[0])
    assert 200.0 < lung_ml < 9000.0, section


@pytest.mark.slow
def test_no_patient_identifier_reaches_the_gallery(gallery):
    text = (gallery["review"] / "index.html").read_text(encoding="utf-8")
    names = " ".join(p.name for p in gallery["review"].iterdir())
    assert len(gallery["identifiers"]) >= 6  # name, ID, birth date, UIDs of 3 studies: the check can fail
    leaked = [v for v in gallery["identifiers"] if v in text or v in names]
    assert not leaked, leaked
