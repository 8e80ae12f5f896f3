"""Named sizes, tissue tables and scanner conventions of the phantom cohort.

Every number the generator uses lives here (or in ``conf/base/parameters_phantom.yml``, which
overrides these defaults), so nothing is buried in the science code.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

GENERATOR_VERSION = "1.4.0"  # 1.1: fat planes, diaphragm, stomach and spleen (issue 12); 1.3: whole-body, non-thorax;
# 1.4: diseased lungs (large primary, consolidated lobe, pleural effusion; issue 23), primaries' size in the report


@dataclass(frozen=True)
class SizePreset:
    """Image geometry of one named cohort size.

    Attributes
    ----------
    ct_matrix : int
        CT rows = columns.
    ct_fov_mm : tuple of float
        Range of the CT reconstruction diameter (mm); pixel spacing is ``fov / ct_matrix``.
    pet_matrix : int
        PET rows = columns.
    pet_spacing_mm : float
        PET pixel spacing (mm).
    slice_thickness_mm : float
        Slice thickness = spacing between slices (mm), the same for CT and PET.
    n_slices : tuple of int
        Inclusive range of the number of slices of a study.
    """

    ct_matrix: int
    ct_fov_mm: tuple[float, float]
    pet_matrix: int
    pet_spacing_mm: float
    slice_thickness_mm: float
    n_slices: tuple[int, int]


#: The paper's geometry (Kumar et al., section III-A): CT 512x512 at ~0.98 mm, PET 200x200 at 4.07 mm, 3 mm slices.
SIZES: dict[str, SizePreset] = {
    "paper": SizePreset(512, (490.0, 510.0), 200, 4.07283, 3.0, (80, 110)),
    "demo": SizePreset(256, (490.0, 510.0), 128, 4.07283, 5.0, (42, 50)),
    "tiny": SizePreset(128, (490.0, 510.0), 64, 8.0, 10.0, (22, 26)),
}

DEFAULT_SIZE = "paper"
DEFAULT_N_STUDIES = 50
DEFAULT_SEED = 20190523

# ---------------------------------------------------------------------------------------------
# Tissue codes (internal; never written out except through HU, SUV and labels).
AIR, TABLE_SHELL, TABLE_FOAM, FAT, MUSCLE = 0, 1, 2, 3, 4
CORTEX, MARROW, CARTILAGE, DISC, CANAL = 5, 6, 7, 8, 9
LUNG, LUNG_VESSEL, ATELECTASIS = 10, 11, 12
AIRWAY, AIRWAY_WALL, MED_FAT, MYOCARDIUM, HEART_BLOOD, GREAT_VESSEL, OESOPHAGUS = 13, 14, 15, 16, 17, 18, 19
LIVER, ABDOMEN, ABD_VESSEL = 20, 21, 22
TUMOUR, NODE = 23, 24
#: Tissues outside the thorax (whole-body and non-thorax studies only); drawn from their own stream so a
#: thorax-only cohort stays as it was.
BRAIN, KIDNEY, URINE = 25, 26, 27
#: Pleural fluid (diseased-lung studies only; drawn from the disease stream).
EFFUSION = 28
N_THORAX_TISSUES = 25
N_BODY_TISSUES = 28
N_TISSUES = 29

TISSUE_NAMES = {
    AIR: "air", TABLE_SHELL: "table_shell", TABLE_FOAM: "table_foam", FAT: "fat", MUSCLE: "muscle",
    CORTEX: "cortical_bone", MARROW: "marrow", CARTILAGE: "cartilage", DISC: "disc", CANAL: "spinal_canal",
    LUNG: "lung", LUNG_VESSEL: "lung_vessel", ATELECTASIS: "atelectasis",
    AIRWAY: "airway_lumen", AIRWAY_WALL: "airway_wall", MED_FAT: "mediastinal_fat",
    MYOCARDIUM: "myocardium", HEART_BLOOD: "heart_blood", GREAT_VESSEL: "great_vessel",
    OESOPHAGUS: "oesophagus", LIVER: "liver", ABDOMEN: "abdomen", ABD_VESSEL: "abdominal_vessel",
    TUMOUR: "tumour", NODE: "node", BRAIN: "brain", KIDNEY: "kidney", URINE: "bladder_urine",
    EFFUSION: "pleural_effusion",
}

#: Truth label of each tissue (0 background, 1 lung, 2 mediastinum, 3 tumour). As radiotherapy contouring
#: atlases draw the lungs (Kong et al., IJROBP 2011: "all inflated and collapsed ... lung"), collapsed and
#: consolidated lung (ATELECTASIS) is lung; pleural effusion lies outside the lung, in the pleural space, and
#: is neither lung nor mediastinum (background).
LABEL_OF_TISSUE = {
    LUNG: 1, LUNG_VESSEL: 1, ATELECTASIS: 1,
    AIRWAY: 2, AIRWAY_WALL: 2, MED_FAT: 2, MYOCARDIUM: 2, HEART_BLOOD: 2, GREAT_VESSEL: 2, OESOPHAGUS: 2,
    TUMOUR: 3, NODE: 3,
}

#: CT number ranges (HU) per tissue; each study draws one value uniformly per tissue.
DEFAULT_HU = {
    AIR: (-1000, -1000), TABLE_SHELL: (150, 250), TABLE_FOAM: (-960, -920), FAT: (-115, -90),
    MUSCLE: (40, 55), CORTEX: (700, 1000), MARROW: (180, 300), CARTILAGE: (90, 140), DISC: (70, 100),
    CANAL: (15, 30), LUNG: (-880, -820), LUNG_VESSEL: (35, 45), ATELECTASIS: (25, 45),
    AIRWAY: (-1000, -990), AIRWAY_WALL: (60, 110), MED_FAT: (-105, -80), MYOCARDIUM: (40, 50),
    HEART_BLOOD: (35, 45), GREAT_VESSEL: (35, 45), OESOPHAGUS: (30, 45), LIVER: (50, 65),
    ABDOMEN: (25, 45), ABD_VESSEL: (35, 45), TUMOUR: (25, 45), NODE: (30, 45),
    BRAIN: (28, 40), KIDNEY: (28, 40), URINE: (0, 12), EFFUSION: (2, 14),
}

#: True (pre-PSF) SUV ranges per tissue; each study draws one value uniformly per tissue.
#: Lesion and myocardium SUVs are drawn separately (see PhantomConfig).
DEFAULT_SUV = {
    AIR: (0.0, 0.0), TABLE_SHELL: (0.0, 0.0), TABLE_FOAM: (0.0, 0.0), FAT: (0.25, 0.4),
    MUSCLE: (0.6, 0.85), CORTEX: (0.3, 0.5), MARROW: (1.5, 2.0), CARTILAGE: (0.3, 0.5), DISC: (0.3, 0.5),
    CANAL: (0.3, 0.5), LUNG: (0.4, 0.6), LUNG_VESSEL: (1.5, 2.0), ATELECTASIS: (0.8, 1.3),
    AIRWAY: (0.0, 0.0), AIRWAY_WALL: (0.6, 0.9), MED_FAT: (0.45, 0.7), MYOCARDIUM: (1.5, 10.0),
    HEART_BLOOD: (1.5, 2.0), GREAT_VESSEL: (1.5, 2.0), OESOPHAGUS: (1.0, 1.6), LIVER: (2.0, 2.8),
    ABDOMEN: (1.2, 2.0), ABD_VESSEL: (1.5, 2.0), TUMOUR: (4.0, 20.0), NODE: (3.0, 10.0),
    # physiological FDG uptake outside the thorax (QIBA FDG profile ranges): grey-matter-rich brain,
    # kidneys (parenchyma with excreted tracer), urine in the bladder
    BRAIN: (6.0, 10.0), KIDNEY: (3.0, 5.0), URINE: (10.0, 40.0),
    # a simple (transudative) pleural effusion takes up little FDG
    EFFUSION: (0.3, 0.6),
}

# ---------------------------------------------------------------------------------------------
# Scanner conventions. Each study uses one vendor style and one radiopharmaceutical-time style.

#: Vendor styles: Units, DecayCorrection, Manufacturer, model, CT pixel representation.
VENDOR_STYLES = {
    "siemens": {"units": "BQML", "decay_correction": "START", "manufacturer": "SIEMENS",
                "model": "Biograph128_mCT", "ct_signed": False},
    "philips": {"units": "CNTS", "decay_correction": "START", "manufacturer": "Philips Medical Systems",
                "model": "GEMINI TF TOF 16", "ct_signed": False},
    "ge": {"units": "BQML", "decay_correction": "ADMIN", "manufacturer": "GE MEDICAL SYSTEMS",
           "model": "Discovery 690", "ct_signed": True},
}
#: Radiopharmaceutical start styles: with RadiopharmaceuticalStartDateTime (0018,1078), or only the time (0018,1072).
RADIOPHARM_TIME_STYLES = ("datetime", "time_only")
#: Every (vendor, time style) pair; study i uses CONVENTIONS[i % len] unless overridden.
CONVENTIONS = tuple(f"{v}_{t}" for v in VENDOR_STYLES for t in RADIOPHARM_TIME_STYLES)

PHILIPS_PRIVATE_CREATOR = "Philips PET Private Group"
PHILIPS_PRIVATE_GROUP = 0x7053
#: Element offsets in the Philips block: SUV scale factor (7053,xx00) and activity concentration
#: scale factor (7053,xx09); with the creator at (7053,0010) the block is 0x10, i.e. (7053,1000)/(7053,1009).
PHILIPS_SUV_FACTOR_OFFSET = 0x00
PHILIPS_ACTIVITY_FACTOR_OFFSET = 0x09

F18_HALF_LIFE_S = 6586.2
INT16_MAX = 32767
CT_RESCALE_INTERCEPT = -1024.0
CT_HU_RANGE = (-1024, 3071)


@dataclass(frozen=True)
class PhantomConfig:
    """All tunable parameters of the generator (a size preset plus physics and anatomy ranges).

    Any field can be overridden by keyword in :func:`make_config` (and so from
    ``parameters_phantom.yml``). Ranges are ``(low, high)`` and drawn uniformly per study.
    """

    size: str = DEFAULT_SIZE
    geometry: SizePreset = SIZES[DEFAULT_SIZE]
    # PET physics
    psf_fwhm_mm: float = 6.0
    pet_noise_cv: tuple[float, float] = (0.15, 0.25)   # sd at SUV 1 (sd = cv * sqrt(SUV * 1 SUV))
    pet_noise_floor_suv: float = 0.01                   # keeps faint noise in air
    pet_noise_corr_voxels: float = 1.0                  # gaussian sigma correlating PET noise (PET voxels)
    # CT physics
    ct_noise_hu: tuple[float, float] = (10.0, 20.0)
    ct_noise_corr_voxels: float = 0.6
    ct_partial_volume_mm: float = 0.4
    lung_texture_hu: float = 18.0
    lung_dependent_gradient_hu: float = 60.0
    # lesions
    n_lesions: tuple[int, int] = (1, 7)
    primary_fraction: float = 0.45                      # share of lesions that are primaries (>= 1 primary)
    primary_diameter_mm: tuple[float, float] = (16.0, 48.0)
    node_diameter_mm: tuple[float, float] = (10.0, 22.0)
    primary_peak_suv: tuple[float, float] = DEFAULT_SUV[TUMOUR]
    node_peak_suv: tuple[float, float] = DEFAULT_SUV[NODE]
    lesion_to_background_min: float = 3.5               # true peak >= this x local background SUV
    recovery_fraction: float = 0.4                      # lesions must be recoverable by this fraction-of-peak threshold
    recovery_boost: float = 1.3                         # ... else their uptake is raised by this factor
    recovery_max_boosts: int = 3
    atelectasis_probability: float = 0.35
    atelectasis_length_mm: tuple[float, float] = (30.0, 60.0)
    myocardium_margin_mm: float = 15.0                  # lesions keep this far from the myocardium
    blood_margin_mm: float = 7.0                        # nodes keep this far from blood, marrow, liver
    oesophagus_margin_mm: float = 3.0                   # ... and this far from the oesophagus
    # patient, dose and timing
    weight_kg: tuple[float, float] = (48.0, 115.0)
    height_m: tuple[float, float] = (1.50, 1.92)
    dose_mbq_per_kg: tuple[float, float] = (3.0, 5.0)
    uptake_min: tuple[float, float] = (50.0, 80.0)
    pet_bed_length_mm: float = 160.0
    pet_frame_duration_s: tuple[float, float] = (120.0, 180.0)
    philips_counts_per_bqml: tuple[float, float] = (0.2, 2.0)
    # ---- archive realism (DICOM): how part of the cohort is stored, chosen by study index ----
    # archive_transfer_syntaxes: study i is stored in syntaxes[i % len] (names of
    #   phantom.dicomio.TRANSFER_SYNTAXES: explicit_le, implicit_le, deflate, rle, jpeg_ls,
    #   jpeg_ls_near, jpeg2000, jpeg2000_lossy); empty = every study explicit VR little endian.
    # archive_enhanced_every: every n-th study (index % n == n - 1) as one enhanced (legacy-converted)
    #   multi-frame CT and PET object each; 0 = never.
    # archive_clutter_every: every n-th study (index % n == n - 1; see dicomio.write_clutter)
    #   also holds a scout, a thick second CT series, a coronal reformat, a non-attenuation-corrected
    #   PET, a MIP secondary capture and an RT structure set; 0 = never.
    archive_transfer_syntaxes: tuple[str, ...] = ()
    archive_enhanced_every: int = 0
    archive_clutter_every: int = 0
    # ---- field of view (phantom.wholebody), chosen by study index like the archive options ----
    # wholebody_every: every n-th study (index % n == n - 1) is a whole-body PET-CT, skull base to
    #   mid-thigh (brain, liver, kidneys, bladder hot; a pelvic node in the report), its PET
    #   pet_length_difference_beds bed positions shorter or longer than the CT at one end; 0 = never.
    # non_thorax_every: every n-th study is a non_thorax_body_part study (no lungs; BodyPartExamined
    #   set), which preprocess must quarantine as not a thorax; it wins over wholebody_every.
    # wholebody_slice_factor: those studies' slice spacing is this times the size preset's (memory, speed).
    wholebody_every: int = 0
    non_thorax_every: int = 0
    non_thorax_body_part: str = "PELVIS"
    wholebody_slice_factor: float = 2.0
    pet_length_difference_beds: int = 1
    # ---- diseased lungs (phantom.disease), chosen by study index like the options above, thorax studies only ----
    # large_primary_every: every n-th study's first primary is large (large_primary_diameter_mm) and lies against
    #   the mediastinum; consolidation_every: a consolidated (airless) lobe beside the mediastinum, truth lung;
    #   effusion_every: pleural effusion along the posterior chest wall at the bases, truth background. 0 = never.
    large_primary_every: int = 0
    large_primary_diameter_mm: tuple[float, float] = (60.0, 100.0)
    consolidation_every: int = 0
    consolidation_semi_mm: tuple[float, float] = (35.0, 50.0)    # semi-axes of the consolidated region
    effusion_every: int = 0
    effusion_depth_mm: tuple[float, float] = (15.0, 35.0)        # thickness at the base
    effusion_height_mm: tuple[float, float] = (50.0, 90.0)       # how far above the dome it reaches
    tissue_hu: dict[int, tuple[float, float]] = field(default_factory=lambda: dict(DEFAULT_HU))
    tissue_suv: dict[int, tuple[float, float]] = field(default_factory=lambda: dict(DEFAULT_SUV))

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (used to decide whether an existing cohort matches)."""
        out = dataclasses.asdict(self)
        out["tissue_hu"] = {TISSUE_NAMES[k]: list(v) for k, v in self.tissue_hu.items()}
        out["tissue_suv"] = {TISSUE_NAMES[k]: list(v) for k, v in self.tissue_suv.items()}
        out["geometry"] = {k: (list(v) if isinstance(v, tuple) else v) for k, v in out["geometry"].items()}
        return _lists(out)


def _lists(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _lists(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_lists(v) for v in obj]
    return obj


_NAME_TO_TISSUE = {v: k for k, v in TISSUE_NAMES.items()}


def make_config(size: str = DEFAULT_SIZE, **overrides: Any) -> PhantomConfig:
    """Build a :class:`PhantomConfig` from a named size and keyword overrides.

    Parameters
    ----------
    size : str
        One of :data:`SIZES` (``"paper"``, ``"demo"``, ``"tiny"``).
    **overrides
        Field overrides. Geometry fields (``ct_matrix``, ``pet_matrix``, ``pet_spacing_mm``,
        ``slice_thickness_mm``, ``n_slices``, ``ct_fov_mm``) change the size preset;
        ``tissue_hu`` / ``tissue_suv`` take ``{tissue_name: [low, high]}``.

    Returns
    -------
    PhantomConfig
    """
    if size not in SIZES:
        raise ValueError(f"unknown phantom size {size!r}; choose one of {sorted(SIZES)}")
    geometry_fields = {f.name for f in dataclasses.fields(SizePreset)}
    config_fields = {f.name for f in dataclasses.fields(PhantomConfig)}
    geo = {k: _tuple(v) for k, v in overrides.items() if k in geometry_fields}
    rest = {k: v for k, v in overrides.items() if k not in geometry_fields}
    unknown = set(rest) - config_fields
    if unknown:
        raise ValueError(f"unknown phantom parameter(s): {sorted(unknown)}")
    for key in ("tissue_hu", "tissue_suv"):
        if key in rest:
            table = dict(DEFAULT_HU if key == "tissue_hu" else DEFAULT_SUV)
            for name, rng in (rest[key] or {}).items():
                if name not in _NAME_TO_TISSUE:
                    raise ValueError(f"{key}: unknown tissue {name!r}; known: {sorted(_NAME_TO_TISSUE)}")
                table[_NAME_TO_TISSUE[name]] = _tuple(rng)
            rest[key] = table
    rest = {k: (_tuple(v) if isinstance(v, list) else v) for k, v in rest.items()}
    rest.pop("size", None)
    rest.pop("geometry", None)
    geometry = dataclasses.replace(SIZES[size], **geo)
    return PhantomConfig(size=size, geometry=geometry, **rest)


def _tuple(v: Any) -> Any:
    return tuple(v) if isinstance(v, list) else v
