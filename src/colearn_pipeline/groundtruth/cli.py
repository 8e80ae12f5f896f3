"""Dice of the derived ground truth against the phantom's truth, per study and on average (QA only).

Command line::

    python -m colearn_pipeline.groundtruth data/01_raw [--studies N] [--params PARAMS.json]
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from colearn_pipeline.groundtruth.phantom_qa import evaluate_cohort


def main(argv: Sequence[str] | None = None) -> int:
    """Print the Dice table of a phantom raw folder; 1 when no study has CT, report and truth."""
    parser = argparse.ArgumentParser(prog="python -m colearn_pipeline.groundtruth", description=__doc__.splitlines()[0])
    parser.add_argument("raw_dir", help="folder with dicom/, reports/, phantom_truth/")
    parser.add_argument("--studies", type=int, default=None, help="evaluate at most this many studies")
    parser.add_argument("--params", default=None, help="JSON file of {lungs:{}, mediastinum:{}, tumours:{}}")
    args = parser.parse_args(argv)
    params = json.loads(Path(args.params).read_text()) if args.params else None
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
