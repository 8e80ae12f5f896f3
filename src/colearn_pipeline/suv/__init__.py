"""PET -> SUV conversion: the QIBA vendor-neutral rules extended to every IBSI-SUV reference case.

:func:`suv_conversion` reads the headers of one PET series and returns one multiplicative factor
per slice (``SUV = rescaled pixel value * factor``); :func:`to_suv` applies it and, given a
:class:`SuvPlausibility`, refuses non-finite or implausible SUV volumes. ``docs/suv.md`` gives
every rule and the IBSI-SUV conformance table.

Modules
-------
``headers``
    Reading: tag names, series-level values, DICOM dates and times, vendor private tags.
``patient``
    Weight, height, sex, radiopharmaceutical, dose and half-life with their unit rules and ranges.
``timing``
    Injection time, the decay-correction reference time (QIBA order), frame-duration terms.
``body_size``
    Lean body mass, ideal body weight and body surface area formulas.
``plausibility``
    :class:`SuvPlausibility` (the ``suv`` block of ``conf/base/parameters_suv.yml``) and
    :func:`check_suv_values`.
``conversion``
    :func:`suv_conversion` per Units, :class:`SuvConversion`, :func:`to_suv`.
``enhanced``
    :func:`frame_headers`: one classic header per frame of an enhanced multi-frame PET object.
``cli``
    ``colearn-suv``.
"""

from colearn_pipeline.suv.body_size import (
    BSA_DUBOIS,
    CM2_PER_M2,
    CM_PER_M,
    IBW_DEVINE,
    IBW_REFERENCE_HEIGHT_CM,
    LBM_JAMES128,
    LBM_JANMAHASATIAN,
    LBM_JANMAHASATIAN_NUMERATOR,
    LBM_MORGAN,
    body_surface_area_m2,
    ideal_body_weight_kg,
    lean_body_mass_kg,
)
from colearn_pipeline.suv.conversion import SUV_TYPES, SuvConversion, suv_conversion, to_suv
from colearn_pipeline.suv.enhanced import frame_headers
from colearn_pipeline.suv.errors import SuvError
from colearn_pipeline.suv.headers import (
    DEFAULT_PRIVATE_BLOCK,
    GE_CREATOR,
    GE_GROUP,
    GE_SCAN_DATETIME_ELEMENT,
    PHILIPS_ACTIVITY_SCALE_ELEMENT,
    PHILIPS_CREATOR,
    PHILIPS_GROUP,
    PHILIPS_SUV_SCALE_ELEMENT,
)
from colearn_pipeline.suv.patient import (
    BQ_PER_MBQ,
    DOSE_MAX_BQ,
    DOSE_MBQ_BELOW,
    DOSE_MIN_BQ,
    G_PER_KG,
    HEIGHT_MAX_M,
    WEIGHT_GRAMS_ABOVE,
)
from colearn_pipeline.suv.plausibility import Radionuclide, SuvPlausibility, check_slice_continuity, check_suv_values
from colearn_pipeline.suv.timing import (
    MAX_UPTAKE_HALF_LIVES,
    MS_PER_S,
    REF_ADMIN,
    REF_BACKCOMPUTED,
    REF_EARLIEST_ACQ,
    REF_GE_PRIVATE,
    REF_NONE,
    REF_NOT_NEEDED,
    REF_SERIES,
    REF_SERIES_NO_ACQ,
    SMALL_LAMBDA_T,
    average_count_rate_time_s,
    frame_decay_factor,
)

__all__ = [
    "BQ_PER_MBQ",
    "BSA_DUBOIS",
    "CM2_PER_M2",
    "CM_PER_M",
    "DEFAULT_PRIVATE_BLOCK",
    "DOSE_MAX_BQ",
    "DOSE_MBQ_BELOW",
    "DOSE_MIN_BQ",
    "GE_CREATOR",
    "GE_GROUP",
    "GE_SCAN_DATETIME_ELEMENT",
    "G_PER_KG",
    "HEIGHT_MAX_M",
    "IBW_DEVINE",
    "IBW_REFERENCE_HEIGHT_CM",
    "LBM_JAMES128",
    "LBM_JANMAHASATIAN",
    "LBM_JANMAHASATIAN_NUMERATOR",
    "LBM_MORGAN",
    "MAX_UPTAKE_HALF_LIVES",
    "MS_PER_S",
    "PHILIPS_ACTIVITY_SCALE_ELEMENT",
    "PHILIPS_CREATOR",
    "PHILIPS_GROUP",
    "PHILIPS_SUV_SCALE_ELEMENT",
    "REF_ADMIN",
    "REF_BACKCOMPUTED",
    "REF_EARLIEST_ACQ",
    "REF_GE_PRIVATE",
    "REF_NONE",
    "REF_NOT_NEEDED",
    "REF_SERIES",
    "REF_SERIES_NO_ACQ",
    "SMALL_LAMBDA_T",
    "SUV_TYPES",
    "Radionuclide",
    "SuvConversion",
    "SuvError",
    "SuvPlausibility",
    "WEIGHT_GRAMS_ABOVE",
    "average_count_rate_time_s",
    "body_surface_area_m2",
    "check_slice_continuity",
    "check_suv_values",
    "frame_decay_factor",
    "frame_headers",
    "ideal_body_weight_kg",
    "lean_body_mass_kg",
    "suv_conversion",
    "to_suv",
]
