"""DistributedDataParallel on CPU (gloo, two processes): spawn, and torchrun with colearn-train."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from colearn_pipeline.training import TrainConfig, TrainingRun, assemble_slices, list_checkpoints, run_training
from synthetic_studies import synthetic_study

CFG = dict(seed=4, epochs=2, batch_size=2, learning_rate=0.02, l2_lambda=0.0, checkpoint_every=1,
           keep_checkpoints=0, progress=False, device="cpu")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, world: int, port: int, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), OMP_NUM_THREADS="1")
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        names = [f"study-{i:010x}" for i in range(3)]
        data = assemble_slices({n: synthetic_study(n, 3, 16, seed=i) for i, n in enumerate(names)}, names)
        run = TrainingRun("colearn", {"width": 4, "depth": 2}, data, TrainConfig.from_params(CFG),
                          checkpoint_dir=Path(out) / "ckpt")
        seen = []
        train_step = run.train_step
        run.train_step = lambda indices: (seen.append(len(indices)), train_step(indices))
        ((bundle, history),) = run_training([run])
        per_epoch = [sum(seen[:3]), sum(seen[3:])]  # 5 slices in batches of 2: 3 steps an epoch
        torch.save({"state": bundle["state_dict"], "history": history, "per_rank_slices": per_epoch},
                   Path(out) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_two_process_gloo_training_keeps_replicas_identical(tmp_path):
    mp.spawn(_worker, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True)
    r0 = torch.load(tmp_path / "rank0.pt", weights_only=True)
    r1 = torch.load(tmp_path / "rank1.pt", weights_only=True)
    params = [k for k in r0["state"] if "running" not in k and "num_batches" not in k]
    for k in params:  # DDP all-reduces gradients: the weights stay equal on both ranks
        assert torch.equal(r0["state"][k], r1["state"][k]), k
    assert [h["train_loss"] for h in r0["history"]] == [h["train_loss"] for h in r1["history"]]
    # 9 slices over 2 ranks: 5 per rank (padded like DistributedSampler), 10 slices per epoch
    assert [h["slices"] for h in r0["history"]] == [10, 10]
    assert r0["per_rank_slices"] == r1["per_rank_slices"] == [5, 5]
    (run_dir,) = list((tmp_path / "ckpt").iterdir())
    assert [e for e, _ in list_checkpoints(run_dir)] == [1, 2]
    ckpt = torch.load(run_dir / "epoch_00002.pt", weights_only=True)
    assert ckpt["world_size"] == 2 and len(ckpt["rng"]) == 2


@pytest.mark.slow
def test_torchrun_colearn_train_then_kedro_resumes(tmp_path):
    from test_train_eval_e2e import kedro, make_project, project_env

    root = make_project(tmp_path / "p", n_studies=4, n_slices=3, size=16)
    torchrun = str(Path(sys.executable).with_name("torchrun"))
    proc = subprocess.run(
        [torchrun, "--standalone", "--nproc_per_node=2", "-m", "colearn_pipeline.training.cli",
         "--env", "test", "--nets", "tc", "--backend", "gloo"],
        cwd=root, env=project_env(root), capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    model = root / "data" / "06_models" / "tc" / "model.pt"
    assert model.exists()
    before = torch.load(model, weights_only=True)["state_dict"]
    out = kedro(root, "run", "--env", "test", "--pipeline", "train_eval", "--to-nodes", "tc.train_evaluate")
    assert "resumed from" in out.stdout + out.stderr
    after = torch.load(model, weights_only=True)["state_dict"]
    assert all(torch.equal(before[k], after[k]) for k in before)
