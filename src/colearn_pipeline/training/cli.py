"""``colearn-train``: train nets outside ``kedro run``: several seeds, concurrently, on GPUs, with a plan.

    colearn-train --env paper --plan                  # make paper: print the plan, then train
    colearn-train --env paper --dry-run               # the plan only
    torchrun --nproc_per_node=4 -m colearn_pipeline.training.cli --env local --nets colearn tb tc fs

Reads the project's configuration (``conf/base`` + ``--env``) and ``model_input`` through a
Kedro session, makes the same split as the pipeline (same parameters, same seed) and trains
every (net, seed) job: the nets and seeds of the ``protocol`` parameters block when the
environment has one (``conf/paper``), else ``--nets`` with ``training.seed``. With
``--concurrent`` (or ``protocol.concurrent``) the jobs train together on one device
(:func:`colearn_pipeline.training.run_training`). A job's folder is
``<checkpoint_root>/<net>`` for the training seed, where the ``train_eval`` nodes look (its model
also goes to the catalog's ``<net>.model``), and ``<checkpoint_root>/<net>-seed<seed>`` for other
seeds; each holds ``checkpoints/``, ``model.pt`` and ``history.csv``. Rerunning resumes every job
from its latest checkpoint (a preempted protocol loses at most ``checkpoint_every`` epochs). Under
``torchrun`` DDP shards every job. With ``mlflow.enabled`` each job gets its own MLflow run under
one parent run that logs system metrics. The project is the folder given by ``--project-path``,
else the nearest folder at or above the working directory whose ``pyproject.toml`` has a
``[tool.kedro]`` table, so the command works from anywhere inside a project; its parameters are
the project's ``conf/base`` (+ ``--env``), and ``--params FILE`` (a YAML mapping of parameter
blocks, e.g. ``training: {epochs: 3}``) overrides them as Kedro runtime parameters.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from colearn_pipeline.training.distributed import cleanup_distributed, init_distributed

logger = logging.getLogger(__name__)


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="colearn-train", description=__doc__.splitlines()[0])
    parser.add_argument("--env", default=None, help="Kedro configuration environment (default: local)")
    parser.add_argument("--nets", nargs="+", default=None, help="default: protocol.nets, else all four")
    parser.add_argument("--seeds", nargs="+", type=int, default=None, help="default: protocol.seeds, else training.seed")
    parser.add_argument("--epochs", type=int, default=None, help="override training.epochs")
    parser.add_argument("--concurrent", action="store_true", default=None, help="train all jobs together on one device")
    parser.add_argument("--plan", action="store_true", help="print the plan (timed warm-up steps), then train")
    parser.add_argument("--dry-run", action="store_true", help="print the plan and stop")
    parser.add_argument("--no-mlflow", action="store_true", help="no MLflow runs even if mlflow.enabled")
    parser.add_argument("--backend", default=None, help="nccl or gloo (default: nccl with CUDA, else gloo)")
    parser.add_argument("--project-path", default=None,
                        help="Kedro project root (default: the nearest one at or above the working directory)")
    parser.add_argument("--params", default=None, help="YAML of parameter blocks overriding the project's conf")
    return parser.parse_args(argv)


def find_project_root(start: str | Path) -> Path | None:
    """The nearest folder at or above ``start`` whose pyproject.toml has a ``[tool.kedro]`` table."""
    for folder in (Path(start).resolve(), *Path(start).resolve().parents):
        pyproject = folder / "pyproject.toml"
        if pyproject.is_file() and "[tool.kedro]" in pyproject.read_text(encoding="utf-8"):
            return folder
    return None


def _runtime_params(path: str | None) -> dict[str, Any]:
    """The parameter blocks of ``--params`` (empty without it); raises ValueError naming the file."""
    if path is None:
        return {}
    import yaml

    if not Path(path).is_file():
        raise ValueError(f"parameters file {path} not found")
    data = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
    if not isinstance(data, dict):
        raise ValueError(f"parameters file {path}: expected a mapping of parameter blocks")
    return data


def job_folder(checkpoint_root: str | Path, net: str, seed: int, training_seed: int) -> Path:
    """A job's folder: ``<root>/<net>`` for the training seed, ``<root>/<net>-seed<seed>`` otherwise."""
    return Path(checkpoint_root) / (net if int(seed) == int(training_seed) else f"{net}-seed{int(seed)}")


def _jobs(args: argparse.Namespace, protocol: Mapping[str, Any], training_seed: int) -> list[tuple[str, int]]:
    nets = args.nets or protocol.get("nets") or ["colearn", "tb", "tc", "fs"]
    seeds = args.seeds or protocol.get("seeds") or [training_seed]
    return [(str(net), int(seed)) for net in nets for seed in seeds]


def _save_job(catalog: Any, folder: Path, net: str, is_training_seed: bool, bundle: dict, history: list) -> None:
    from colearn_pipeline.datasets._atomic import atomic_write
    from colearn_pipeline.training.checkpoint import atomic_torch_save

    atomic_torch_save(bundle, folder / "model.pt")
    atomic_write(folder / "history.csv", lambda tmp: pd.DataFrame(history).to_csv(tmp, index=False))
    if is_training_seed:
        catalog.save(f"{net}.model", bundle)
        catalog.save(f"{net}.history", pd.DataFrame(history))


def _job_callbacks(args: argparse.Namespace, params: Mapping[str, Any], project: Path, rank: int,
                   jobs: list[tuple[str, int]], cfg: Any) -> contextlib.AbstractContextManager:
    """MLflow job runs when ``mlflow.enabled`` (rank 0): a context yielding one callback per job."""
    settings = dict(params.get("mlflow") or {})
    if args.no_mlflow or rank != 0 or not settings.get("enabled", False):
        return contextlib.nullcontext([None] * len(jobs))
    from colearn_pipeline.training.tracking import job_runs

    uri = os.environ.get("MLFLOW_TRACKING_URI") or settings.get("tracking_uri") or f"sqlite:///{project / 'mlflow.db'}"
    return job_runs(uri, settings.get("experiment_name", "colearn-pipeline"), jobs, params["model"], cfg)


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point."""
    args = _parse_args(argv)
    from kedro.framework.session import KedroSession
    from kedro.framework.startup import bootstrap_project

    project = Path(args.project_path).resolve() if args.project_path else find_project_root(Path.cwd())
    if project is None:
        print(f"colearn-train: error: {Path.cwd()} is not inside a Kedro project (no pyproject.toml with "
              "[tool.kedro] here or above); give --project-path", file=sys.stderr)
        return 2
    try:
        extra_params = _runtime_params(args.params)
    except ValueError as exc:
        print(f"colearn-train: error: {exc}", file=sys.stderr)
        return 2
    world, rank, _ = init_distributed(args.backend)
    try:
        bootstrap_project(project)
        with KedroSession.create(project_path=project, env=args.env, runtime_params=extra_params) as session:
            context = session.load_context()
            return _train(args, context.params, context.catalog, project, world, rank)
    finally:
        cleanup_distributed()


def _train(args: argparse.Namespace, params: Mapping[str, Any], catalog: Any, project: Path, world: int,
           rank: int) -> int:
    from colearn_pipeline.pipelines.train_eval import nodes
    from colearn_pipeline.training.config import TrainConfig
    from colearn_pipeline.training.loop import TrainingRun, run_training

    protocol = dict(params.get("protocol") or {})
    model_input = _load_model_input(catalog, allow_missing=args.dry_run)
    n_slices = None
    if not model_input and args.dry_run:
        split, train_set = None, _nominal_train_set(params, int(params["training"]["batch_size"]))
        n_slices = int(protocol.get("nominal_training_slices", 0))
        if n_slices <= 0:
            raise ValueError("no model input: run the preprocess pipeline first (or set protocol.nominal_training_slices)")
    else:
        split = nodes.split_studies(model_input, params["split"])
        # the slices train_eval trains on (params:sampling), so its checkpoints are found there
        train_set = nodes.training_slices(nodes.assemble_set(model_input, split, "train"), params["sampling"])
    training = dict(params["training"])
    if args.epochs is not None:
        training["epochs"] = args.epochs
    cfg = TrainConfig.from_params(training)
    jobs = _jobs(args, protocol, cfg.seed)
    if cfg.checkpoint_root is None:
        raise ValueError("colearn-train needs training.checkpoint_root (where each job's folder goes)")
    folders = [job_folder(cfg.checkpoint_root, net, seed, cfg.seed) for net, seed in jobs]
    if (args.plan or args.dry_run) and rank == 0:
        _print_plan(jobs, params["model"], train_set, cfg, folders, protocol, world, n_slices)
        if args.dry_run:
            return 0
    if rank == 0:
        catalog.save("split", split)
    concurrent = args.concurrent if args.concurrent is not None else bool(protocol.get("concurrent", False))
    groups = [list(range(len(jobs)))] if concurrent else [[i] for i in range(len(jobs))]
    with _job_callbacks(args, params, project, rank, jobs, cfg) as callbacks:
        for group in groups:
            runs = [TrainingRun(jobs[i][0], params["model"], train_set, cfg.with_seed(jobs[i][1]),
                                checkpoint_dir=folders[i] / "checkpoints", on_epoch_end=callbacks[i]) for i in group]
            for i, (bundle, history) in zip(group, run_training(runs)):
                net, seed = jobs[i]
                if rank == 0:
                    _save_job(catalog, folders[i], net, seed == cfg.seed, bundle, history)
                    logger.info("%s seed %d: %d epochs on %d process(es); final train accuracy %.4f",
                                net, seed, len(history), world, history[-1]["train_accuracy"])
    return 0


def _load_model_input(catalog: Any, allow_missing: bool) -> Mapping[str, Any]:
    """The catalog's ``model_input``; ``{}`` when there is none yet and ``allow_missing``."""
    from kedro.io import DatasetError

    try:
        return catalog.load("model_input")
    except DatasetError:
        if not allow_missing:
            raise
        return {}


def _nominal_train_set(params: Mapping[str, Any], batch_size: int) -> dict[str, np.ndarray]:
    """Two batches of random slices of the model size: timing for a plan before there is model input."""
    h, w = (int(v) for v in params["preprocess"]["model_size"])
    rng = np.random.default_rng(0)
    logger.warning("no model input yet: the plan times random %dx%d slices", h, w)
    n = 2 * batch_size
    return {"x": rng.standard_normal((n, 2, h, w), dtype=np.float32), "y": rng.integers(0, 4, (n, h, w))}


def _print_plan(jobs, model_kwargs, train_set, cfg, folders, protocol, world, n_slices=None) -> None:
    from colearn_pipeline.training.plan import format_plan, plan_jobs

    if world > 1:
        raise ValueError("--plan / --dry-run time a single process: run them without torchrun")
    plans = plan_jobs(jobs, model_kwargs, train_set, cfg, [f / "checkpoints" for f in folders],
                      steps=int(protocol.get("plan_steps", 3)), warmup=int(protocol.get("plan_warmup_steps", 1)),
                      n_slices=n_slices)
    print(format_plan(plans, cfg, n_slices or len(train_set["x"])), flush=True)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
