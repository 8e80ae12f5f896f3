"""The GPU code paths on CPU: bf16 autocast, channels-last, torch.compile, concurrent runs."""

import math

import pytest
import torch
from synthetic_studies import synthetic_train_set

from colearn_pipeline.training import (
    TrainConfig,
    TrainingRun,
    list_checkpoints,
    run_training,
    train_model,
)

MODEL = {"width": 4, "depth": 2}


@pytest.fixture(scope="module")
def train_set():
    return synthetic_train_set(n_studies=2, n_slices=3, size=16)


def _config(**kw):
    base = dict(seed=5, epochs=1, batch_size=3, learning_rate=0.01, l2_lambda=0.001, progress=False, device="cpu")
    base.update(kw)
    return TrainConfig.from_params(base)


def _one_epoch(run):
    """Run one epoch by its phases, recording the dtype of every conv output; return the row."""
    dtypes = set()
    hooks = [m.register_forward_hook(lambda _m, _i, out: dtypes.add(out.dtype)) for m in run.module.modules()
             if isinstance(m, torch.nn.modules.conv._ConvNd)]
    run.on_train_start()
    for indices in run.on_epoch_start(0):
        run.train_step(indices)
    row = run.validation_step()
    for h in hooks:
        h.remove()
    return row, dtypes


def _assert_every_block_learns(module):
    for name, p in module.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        assert float(p.grad.abs().sum()) > 0, name  # the loss reaches every block's parameters


@pytest.mark.parametrize("net", ["colearn", "tc"])
def test_bf16_autocast_on_cpu(train_set, net):
    run = TrainingRun(net, MODEL, train_set, _config(amp=True))
    row, dtypes = _one_epoch(run)
    assert dtypes == {torch.bfloat16}
    assert math.isfinite(row["train_loss"]) and row["slices"] == 6
    _assert_every_block_learns(run.module)


def test_channels_last_on_cpu(train_set):
    run = TrainingRun("colearn", MODEL, train_set, _config(channels_last=True))
    row, dtypes = _one_epoch(run)
    convs = [m for m in run.module.modules() if isinstance(m, torch.nn.Conv2d)]
    assert all(c.weight.is_contiguous(memory_format=torch.channels_last) for c in convs)
    assert run._batch(run.on_epoch_start(1)[0])[0].is_contiguous(memory_format=torch.channels_last)
    assert dtypes == {torch.float32} and math.isfinite(row["train_loss"])
    _assert_every_block_learns(run.module)


def test_channels_last_and_amp_reach_the_same_loss_as_the_plain_path(train_set):
    plain, _ = train_model("colearn", MODEL, train_set, _config(epochs=2))
    fast, hist = train_model("colearn", MODEL, train_set, _config(epochs=2, channels_last=True, amp=True))
    for k, v in plain["state_dict"].items():
        if v.is_floating_point():  # bf16 rounding only: same training, not bitwise
            torch.testing.assert_close(fast["state_dict"][k], v, atol=0.05, rtol=0.05, msg=k)
    assert math.isfinite(hist[-1]["train_loss"])


@pytest.mark.slow
def test_torch_compile_with_amp_and_channels_last_on_cpu(train_set):
    run = TrainingRun("colearn", MODEL, train_set, _config(compile=True, amp=True, channels_last=True))
    row, _ = _one_epoch(run)
    assert isinstance(run.model, torch._dynamo.eval_frame.OptimizedModule)
    assert math.isfinite(row["train_loss"])
    _assert_every_block_learns(run.module)


def test_device_augment_on_cpu_gives_the_same_weights(train_set):
    a, _ = train_model("tc", MODEL, train_set, _config(epochs=2, device_augment=True))
    b, _ = train_model("tc", MODEL, train_set, _config(epochs=2, device_augment=False))
    assert all(torch.equal(a["state_dict"][k], v) for k, v in b["state_dict"].items())


def test_concurrent_runs_equal_solo_runs_with_their_own_checkpoints(train_set, tmp_path):
    jobs = [("tc", 1), ("tc", 2), ("colearn", 1)]
    solo = [train_model(net, MODEL, train_set, _config(seed=seed, epochs=2))[0] for net, seed in jobs]
    runs = [TrainingRun(net, MODEL, train_set, _config(seed=seed, epochs=2, checkpoint_every=1),
                        checkpoint_dir=tmp_path / net) for net, seed in jobs]
    results = run_training(runs)
    for (bundle, history), alone in zip(results, solo):
        assert len(history) == 2
        assert all(torch.equal(bundle["state_dict"][k], v) for k, v in alone["state_dict"].items())
    assert len(list((tmp_path / "tc").iterdir())) == 2  # one fingerprint folder per seed
    for run in runs:
        assert [e for e, _ in list_checkpoints(run.checkpoint_dir)] == [1, 2]
