"""``colearn-train``: train nets outside ``kedro run``, e.g. on several GPUs with ``torchrun``.

    torchrun --nproc_per_node=4 -m colearn_pipeline.training.cli --env local --nets colearn tb tc fs

Reads the project's configuration (``conf/base`` + ``--env``) and ``model_input`` through a
Kedro session, makes the same split as the pipeline (same parameters, same seed), and trains
with :func:`colearn_pipeline.training.train_model` under DistributedDataParallel. Checkpoints go
where the ``train_eval`` nodes look for them (``<checkpoint_root>/<net>/checkpoints``); rank 0
also writes ``data/06_models/<net>/model.pt`` and the history. A following
``kedro run --pipeline train_eval`` with the same parameters resumes from the final checkpoint
(no epoch left) and goes straight to the evaluation. Run from the project root.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from colearn_pipeline.training.distributed import cleanup_distributed, init_distributed

logger = logging.getLogger(__name__)


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(prog="colearn-train", description=__doc__.splitlines()[0])
    parser.add_argument("--env", default=None, help="Kedro configuration environment (default: local)")
    parser.add_argument("--nets", nargs="+", default=["colearn", "tb", "tc", "fs"])
    parser.add_argument("--epochs", type=int, default=None, help="override training.epochs")
    parser.add_argument("--backend", default=None, help="nccl or gloo (default: nccl with CUDA, else gloo)")
    parser.add_argument("--project-path", default=".", help="Kedro project root")
    args = parser.parse_args(argv)

    from kedro.framework.session import KedroSession
    from kedro.framework.startup import bootstrap_project

    from colearn_pipeline.pipelines.train_eval import nodes
    from colearn_pipeline.training.loop import TrainConfig, train_model

    world, rank, _ = init_distributed(args.backend)
    try:
        project = Path(args.project_path).resolve()
        bootstrap_project(project)
        with KedroSession.create(project_path=project, env=args.env) as session:
            context = session.load_context()
            params = context.params
            catalog = context.catalog
            model_input = catalog.load("model_input")
            split = nodes.split_studies(model_input, params["split"])
            train_set = nodes.assemble_set(model_input, split, "train")
            training = dict(params["training"])
            if args.epochs is not None:
                training["epochs"] = args.epochs
            cfg = TrainConfig.from_params(training)
            for net in args.nets:
                ckpt = Path(cfg.checkpoint_root) / net / "checkpoints" if cfg.checkpoint_root else None
                bundle, history = train_model(net, params["model"], train_set, cfg, checkpoint_dir=ckpt)
                if rank == 0:
                    catalog.save("split", split)
                    catalog.save(f"{net}.model", bundle)
                    catalog.save(f"{net}.history", pd.DataFrame(history))
                    logger.info("%s: %d epochs on %d process(es); final train accuracy %.4f",
                                net, len(history), world, history[-1]["train_accuracy"])
    finally:
        cleanup_distributed()
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
