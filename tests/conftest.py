"""Suite-wide test settings."""

import os

import pytest

#: Fixtures giving the unpacked real test data of tests/data (ibsi_suv_root, ibsi_sts_root, lung_ct_root).
pytest_plugins = ("real_data",)

os.environ.setdefault("KEDRO_DISABLE_TELEMETRY", "true")
os.environ.setdefault("MPLBACKEND", "Agg")


@pytest.fixture(autouse=True)
def _isolated_mlflow_store(tmp_path_factory, monkeypatch):
    """Every test tracks into its own throw-away MLflow store, never the project's mlflow.db."""
    store = tmp_path_factory.mktemp("mlflow")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{store / 'mlflow.db'}")
    yield
