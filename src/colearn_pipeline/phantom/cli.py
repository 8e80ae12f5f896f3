"""``colearn-phantom``: write a synthetic PET-CT DICOM cohort.

The cohort parameters default to :data:`BUILTIN_PARAMS`, the same values as the ``phantom`` block
of ``conf/base/parameters_phantom.yml`` (a test keeps the two equal), so the command writes the
pipeline's cohort from any folder. ``--params FILE`` reads a ``phantom`` block whose keys replace
the built-in ones; ``--studies``, ``--seed``, ``--size``, ``--workers`` and ``--force`` override
both. The cohort goes to OUT (the block's ``out_dir`` is the pipeline's); ``--quiet`` hides the
progress bar.
"""

from __future__ import annotations

import argparse
import copy
import logging
import sys
import time
from pathlib import Path
from typing import Any

import yaml

from colearn_pipeline.phantom.config import SIZES
from colearn_pipeline.phantom.generate import generate_cohort

#: The ``phantom`` block used when ``--params`` is not given: equal to conf/base/parameters_phantom.yml.
BUILTIN_PARAMS: dict[str, Any] = {
    "out_dir": "data/01_raw",
    "n_studies": 54,
    "seed": 20190523,
    "size": "paper",
    "workers": 2,
    "force": False,
    "progress": False,
    "overrides": {
        "archive_transfer_syntaxes": ["explicit_le", "rle", "jpeg_ls", "jpeg2000", "deflate"],
        "archive_enhanced_every": 4,
        "archive_clutter_every": 3,
        "wholebody_every": 5,
        "wholebody_slice_factor": 2.0,
        "pet_length_difference_beds": 1,
        "non_thorax_every": 13,
        "non_thorax_body_part": "PELVIS",
        "large_primary_every": 7,
        "consolidation_every": 8,
        "effusion_every": 11,
    },
}


def load_params(path: str | None) -> dict[str, Any]:
    """:data:`BUILTIN_PARAMS` with the keys of FILE's ``phantom`` block put in; raises ValueError naming the file."""
    params = copy.deepcopy(BUILTIN_PARAMS)
    if path is None:
        return params
    if not Path(path).is_file():
        raise ValueError(f"parameters file {path} not found")
    block = (yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}).get("phantom")
    if not isinstance(block, dict):
        raise ValueError(f"parameters file {path} has no top-level 'phantom' block")
    unknown = sorted(set(block) - set(params))
    if unknown:
        raise ValueError(f"{path}: phantom: unknown key(s) {unknown} (accepted: {sorted(params)})")
    return {**params, **block}


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point; returns the exit status."""
    p = argparse.ArgumentParser(prog="colearn-phantom", description=__doc__.splitlines()[0])
    p.add_argument("out", help="output folder (cohort root, e.g. data/01_raw)")
    p.add_argument("--params", default=None, help="YAML with a 'phantom' block (default: built-in, as conf/base)")
    p.add_argument("--studies", type=int, default=None, help="number of studies (default: params n_studies)")
    p.add_argument("--seed", type=int, default=None, help="cohort seed (default: params seed)")
    p.add_argument("--size", choices=sorted(SIZES), default=None, help="geometry preset (default: params size)")
    p.add_argument("--workers", type=int, default=None, help="parallel processes (default: params workers)")
    p.add_argument("--force", action="store_true", default=None, help="regenerate even if an identical cohort exists")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    t0 = time.perf_counter()
    try:
        params = load_params(args.params)
        chosen = {"n_studies": args.studies, "seed": args.seed, "size": args.size, "workers": args.workers,
                  "force": args.force}
        params.update({k: v for k, v in chosen.items() if v is not None})
        summary = generate_cohort(args.out, n_studies=int(params["n_studies"]), seed=int(params["seed"]),
                                  size=str(params["size"]), workers=int(params["workers"]),
                                  force=bool(params["force"]), progress=not args.quiet,
                                  **(params["overrides"] or {}))
    except (ValueError, FileExistsError) as exc:
        print(f"colearn-phantom: error: {exc}", file=sys.stderr)
        return 2
    print(f"{summary['n_studies']} studies, {summary['n_lesions']} lesions, conventions "
          f"{', '.join(summary['conventions'])}: {args.out} ({time.perf_counter() - t0:.1f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
