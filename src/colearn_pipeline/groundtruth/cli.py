"""Dice of the derived ground truth against the phantom's truth, per study and on average (QA only).

Command line::

    python -m colearn_pipeline.groundtruth data/01_raw [--studies N] [--params FILE]

Without ``--params`` every stage runs with the keyword defaults of ``segment_lungs``,
``segment_mediastinum`` and ``segment_tumours``, the values of ``conf/base/parameters_preprocess.yml``
(a test keeps them equal), so the command works from any folder. ``--params FILE`` (YAML or JSON)
holds ``{lungs: {}, mediastinum: {}, tumours: {}}``, or is a preprocess parameters file (its
``preprocess`` block); the keys given replace the defaults, per-study ``overrides`` are not used.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import yaml

from colearn_pipeline.groundtruth.phantom_qa import evaluate_cohort

#: The stages whose keyword parameters ``--params`` may set.
STAGES = ("lungs", "mediastinum", "tumours")


def load_params(path: str | Path) -> dict:
    """The ``lungs`` / ``mediastinum`` / ``tumours`` keywords of a YAML or JSON file.

    A ``preprocess`` block (a parameters_preprocess.yml) is looked into; its other blocks are
    ignored. ``overrides`` (per study) are dropped, and so is ``superior_at_high_z: null`` (conf's
    "from the CT direction"; the phantom's CTs have +z superior, the functions' default).
    """
    data = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a mapping of {list(STAGES)}")
    if isinstance(data.get("preprocess"), dict):
        data = {k: v for k, v in data["preprocess"].items() if k in STAGES}
    unknown = sorted(set(data) - set(STAGES))
    if unknown:
        raise ValueError(f"{path}: unknown key(s) {unknown} (accepted: {list(STAGES)})")
    params = {}
    for stage, block in data.items():
        kwargs = {k: v for k, v in dict(block or {}).items() if k != "overrides"}
        if kwargs.get("superior_at_high_z", True) is None:
            del kwargs["superior_at_high_z"]
        params[stage] = kwargs
    return params


def main(argv: Sequence[str] | None = None) -> int:
    """Print the Dice table of a phantom raw folder; 1 when no study has CT, report and truth."""
    parser = argparse.ArgumentParser(prog="python -m colearn_pipeline.groundtruth", description=__doc__.splitlines()[0])
    parser.add_argument("raw_dir", help="folder with dicom/, reports/, phantom_truth/")
    parser.add_argument("--studies", type=int, default=None, help="evaluate at most this many studies")
    parser.add_argument("--params", default=None, help="YAML/JSON of {lungs:{}, mediastinum:{}, tumours:{}} or "
                        "a parameters_preprocess.yml (default: the functions' defaults, as conf/base)")
    args = parser.parse_args(argv)
    params = load_params(args.params) if args.params else None
    results = evaluate_cohort(args.raw_dir, params=params, max_studies=args.studies)
    if not results:
        print("no study with CT, report and truth found")
        return 1
    print(f"{'study':<20} {'lung':>7} {'medias':>7} {'tumour':>7}")
    for r in (r for r in results if r["scored"]):
        print(f"{r['study']:<20} {r['dice_lung']:7.3f} {r['dice_mediastinum']:7.3f} {r['dice_tumour']:7.3f}")
    scored = [r for r in results if r["scored"]]
    for r in results:
        if not r["scored"]:
            print(f"{r['study']:<20} not scored: its truth holds no lung (not a thorax)")
    if not scored:
        print("no study with lungs in its truth")
        return 1
    means = {k: float(np.mean([r[f'dice_{k}'] for r in scored])) for k in ("lung", "mediastinum", "tumour")}
    print(f"{'mean of ' + str(len(scored)):<20} {means['lung']:7.3f} {means['mediastinum']:7.3f} {means['tumour']:7.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
