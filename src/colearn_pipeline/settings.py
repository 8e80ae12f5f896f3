"""Kedro project settings."""

from kedro.config import OmegaConfigLoader

CONFIG_LOADER_CLASS = OmegaConfigLoader
CONFIG_LOADER_ARGS = {
    "base_env": "base",
    "default_run_env": "local",
    # An environment (conf/demo, conf/local) overrides single keys of a parameter block
    # instead of replacing the whole top-level block.
    "merge_strategy": {"parameters": "soft"},
}

from colearn_pipeline.hooks import MlflowHooks  # noqa: E402
from colearn_pipeline.runlock import RunGuardHooks  # noqa: E402

# RunGuardHooks takes the project's run lock before any other hook runs (tryfirst).
HOOKS = (MlflowHooks(), RunGuardHooks())
