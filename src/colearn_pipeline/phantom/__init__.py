"""Synthetic thoracic PET-CT DICOM cohort (the project's input when no patient data may be used).

Public API
----------
generate_cohort(out_dir, n_studies=50, seed=..., size="paper", workers=1, force=False, progress=False, **overrides)
generate_study(out_dir, index, seed=..., size="paper", convention=None, **overrides)
make_config(size, **overrides), SIZES, CONVENTIONS
"""

from colearn_pipeline.phantom.config import (
    CONVENTIONS,
    DEFAULT_N_STUDIES,
    DEFAULT_SEED,
    DEFAULT_SIZE,
    SIZES,
    VENDOR_STYLES,
    PhantomConfig,
    make_config,
)
from colearn_pipeline.phantom.generate import COHORT_FILE, generate_cohort, generate_study, load_existing

__all__ = [
    "COHORT_FILE", "CONVENTIONS", "DEFAULT_N_STUDIES", "DEFAULT_SEED", "DEFAULT_SIZE", "SIZES", "VENDOR_STYLES",
    "PhantomConfig", "generate_cohort", "generate_study", "load_existing", "make_config",
]
