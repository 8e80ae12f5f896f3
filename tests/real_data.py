"""The real test data of ``tests/data/`` (licences, citations and what each file is for: the READMEs there).

Every test that needs real scanner or reference data gets it from here, never from outside the
clone. The archives are unpacked once per test session into a temporary folder, with the layout
of the archive:

- :func:`ibsi_suv_root` / fixture ``ibsi_suv_root``: ``DRO_<section>_<n>/{PT,RS,mask}`` (17 cases);
- :func:`ibsi_sts_root` / fixture ``ibsi_sts_root``: ``STS_00N/{CT,PET}/{image,mask}``;
- :func:`lung_ct_root` / fixture ``lung_ct_root``: ``ct/`` + ``annotation/``.

The unpacked files are shared by every test of the session: copy a study before editing it. A
missing data file fails the test (never a skip) with the path where it should be.
"""

from __future__ import annotations

import tarfile
from pathlib import Path

import pytest

#: The repository's test data folder.
DATA_DIR = Path(__file__).resolve().parent / "data"
IBSI_SUV_DIR = DATA_DIR / "ibsi_suv"
IBSI_STS_DIR = DATA_DIR / "ibsi_sts"
LUNG_CT_DIR = DATA_DIR / "lung_ct"
#: The 17 IBSI-SUV reference objects (DRO/DRO_x_y/...) and their expected SUVs.
IBSI_SUV_ARCHIVE = IBSI_SUV_DIR / "DRO.tar.gz"
IBSI_SUV_EXPECTED_CSV = IBSI_SUV_DIR / "DRO_list.csv"
#: The three real limb PET-CT studies with the expert's GTV RTSTRUCT (STS_00N/...).
IBSI_STS_ARCHIVE = IBSI_STS_DIR / "STS.tar.gz"
IBSI_STS_STUDIES = ("STS_001", "STS_002", "STS_003")
#: The real chest CT (ct/, annotation/), JPEG-LS lossless.
LUNG_CT_ARCHIVE = LUNG_CT_DIR / "Lung_Dx-A0001.tar.gz"

_unpacked: dict[Path, Path] = {}


def data_file(path: Path) -> Path:
    """``path`` if it is a file, else fail the test naming where it should be."""
    if not Path(path).is_file():
        pytest.fail(f"test data missing: {path} (it belongs to the repository; see tests/data/README.md)",
                    pytrace=False)
    return Path(path)


def unpack(archive: Path, dest: Path) -> Path:
    """Unpack ``archive`` (checked with :func:`data_file`) into ``dest``; returns ``dest``."""
    with tarfile.open(data_file(archive)) as tar:
        tar.extractall(dest, filter="data")
    return dest


def _unpacked_once(archive: Path, tmp_path_factory: pytest.TempPathFactory, inner: str = "") -> Path:
    """The session's one unpacked copy of ``archive`` (its ``inner`` folder), unpacked on first use."""
    if archive not in _unpacked or not _unpacked[archive].is_dir():
        _unpacked[archive] = unpack(archive, tmp_path_factory.mktemp(archive.name.split(".")[0]))
    root = _unpacked[archive] / inner
    if not root.is_dir():
        pytest.fail(f"{archive} holds no {inner}/ folder", pytrace=False)
    return root


def ibsi_suv_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The folder holding ``DRO_0_0`` ... ``DRO_5_0`` (each ``PT/``, ``RS/``, ``mask/DRO_mask.nii.gz``)."""
    return _unpacked_once(IBSI_SUV_ARCHIVE, tmp_path_factory, "DRO")


def ibsi_sts_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The folder holding ``STS_001`` ... ``STS_003`` (each ``{CT,PET}/{image,mask}``)."""
    return _unpacked_once(IBSI_STS_ARCHIVE, tmp_path_factory)


def lung_ct_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The folder holding ``ct/`` (64 slices) and ``annotation/``."""
    return _unpacked_once(LUNG_CT_ARCHIVE, tmp_path_factory)


@pytest.fixture(scope="session", name="ibsi_suv_root")
def _ibsi_suv_root_fixture(tmp_path_factory) -> Path:
    return ibsi_suv_root(tmp_path_factory)


@pytest.fixture(scope="session", name="ibsi_sts_root")
def _ibsi_sts_root_fixture(tmp_path_factory) -> Path:
    return ibsi_sts_root(tmp_path_factory)


@pytest.fixture(scope="session", name="lung_ct_root")
def _lung_ct_root_fixture(tmp_path_factory) -> Path:
    return lung_ct_root(tmp_path_factory)
