"""``colearn-phantom``: write a synthetic PET-CT DICOM cohort."""

from __future__ import annotations

import argparse
import logging
import sys
import time

from colearn_pipeline.phantom.config import DEFAULT_N_STUDIES, DEFAULT_SEED, DEFAULT_SIZE, SIZES
from colearn_pipeline.phantom.generate import generate_cohort


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point; returns the exit status."""
    p = argparse.ArgumentParser(prog="colearn-phantom", description=__doc__)
    p.add_argument("out", help="output folder (cohort root, e.g. data/01_raw)")
    p.add_argument("--studies", type=int, default=DEFAULT_N_STUDIES, help="number of studies (default %(default)s)")
    p.add_argument("--seed", type=int, default=DEFAULT_SEED, help="cohort seed (default %(default)s)")
    p.add_argument("--size", choices=sorted(SIZES), default=DEFAULT_SIZE, help="geometry preset (default %(default)s)")
    p.add_argument("--workers", type=int, default=1, help="parallel processes (default %(default)s)")
    p.add_argument("--force", action="store_true", help="regenerate even if an identical cohort exists")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    t0 = time.perf_counter()
    try:
        summary = generate_cohort(args.out, n_studies=args.studies, seed=args.seed, size=args.size,
                                  workers=args.workers, force=args.force, progress=not args.quiet)
    except (ValueError, FileExistsError) as exc:
        print(f"colearn-phantom: error: {exc}", file=sys.stderr)
        return 2
    print(f"{summary['n_studies']} studies, {summary['n_lesions']} lesions, conventions "
          f"{', '.join(summary['conventions'])}: {args.out} ({time.perf_counter() - t0:.1f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
