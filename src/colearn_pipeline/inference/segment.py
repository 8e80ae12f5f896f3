"""Run trained nets over CT/SUV slices and put their labels (and uncertainty) back on the CT grid.

Each slice is resized to the net's input size (``bundle["input_hw"]``, what it was trained on)
with :func:`~colearn_pipeline.dicom.grid.resize_slices`, exactly as preprocess builds the model
input; the network input and the label resizing are the ones training uses
(:func:`~colearn_pipeline.training.inputs.network_input`, each channel standardised per slice;
:func:`~colearn_pipeline.training.inputs.resize_labels_nearest`, nearest neighbour with pixel
centres aligned, which inverts a resize of the whole field of view).

One or several nets (an ensemble), each optionally over flipped views of every slice (flip
test-time augmentation, the flips training augments with), give softmax samples that
:mod:`colearn_pipeline.inference.ensemble` averages; the label is the argmax of the mean.

Speed on a CPU (benchmarks/predict.py measures each choice): with ``engine: onnxruntime`` each net
is exported once per run to ONNX (in memory) and runs in ONNX Runtime, whose graph optimiser folds
batch norm into the convolutions and fuses the activations: about 0.7x the CPU time of PyTorch for
the width-64 co-learning net on a 2-core AVX2 CPU. With ``engine: torch`` the nets run under
``torch.inference_mode`` (no autograd records), in batches of slices, with weights and inputs in
``channels_last`` memory format (oneDNN's native layout for convolutions: about 20 % faster than
contiguous). bfloat16 autocast (torch engine) is an option for CPUs with native bf16 (AVX512-BF16,
AMX) or CUDA; on AVX2 it is emulated and about 10x slower, and ``torch.compile`` costs minutes of
compilation per run, so both are off.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch

from colearn_pipeline.dicom.grid import resize_slices
from colearn_pipeline.evaluation.metrics import predict_labels
from colearn_pipeline.inference.ensemble import combine_samples
from colearn_pipeline.models.nets import to_channels_last
from colearn_pipeline.training.inputs import network_input, resize_labels_nearest

#: Test-time augmentation modes: the spatial dims of ``(N, C, H, W)`` flipped in each view.
TTA_VIEWS: dict[str, tuple[tuple[int, ...], ...]] = {
    "none": ((),),
    "flip": ((), (-1,), (-2,), (-2, -1)),  # identity, left-right, up-down, both: training's flips
}
#: Inference engines (:func:`prepare_model`).
ENGINES = ("torch", "onnxruntime")
#: ONNX opset of the exported nets.
ONNX_OPSET = 17
#: Most bytes of softmax samples held at once (members x views x slices x classes x H x W float32).
SAMPLE_BUDGET_BYTES = 256 * 2**20
_FLOAT32_BYTES = 4


@dataclass(frozen=True)
class InferenceOptions:
    """How the nets run (``predict.inference`` in conf/base/parameters_predict.yml).

    Attributes
    ----------
    batch_size : int
        Slices per forward pass.
    engine : str
        ``"onnxruntime"`` (CPU only; a CUDA device always uses ``"torch"``) or ``"torch"``.
    channels_last : bool
        Torch engine: weights and inputs in ``channels_last`` memory format.
    bf16 : bool
        Torch engine: bfloat16 autocast (CPU and CUDA); check the labels' agreement with float32 first.
    tta : str
        A key of :data:`TTA_VIEWS`: ``"none"`` or ``"flip"``.
    chunk_slices : int
        Slices resized and held at a time (bounds memory on a 512x512 CT).
    num_threads : int or None
        ``torch.set_num_threads`` for the run (:func:`apply_threads`); None keeps torch's default.
    """

    batch_size: int = 8
    engine: str = "torch"
    channels_last: bool = True
    bf16: bool = False
    tta: str = "none"
    chunk_slices: int = 32
    num_threads: int | None = None

    def __post_init__(self) -> None:
        if self.engine not in ENGINES:
            raise ValueError(f"engine must be one of {ENGINES}, got {self.engine!r}")
        if self.tta not in TTA_VIEWS:
            raise ValueError(f"tta must be one of {sorted(TTA_VIEWS)}, got {self.tta!r}")
        if int(self.batch_size) < 1 or int(self.chunk_slices) < 1:
            raise ValueError("batch_size and chunk_slices must be >= 1")
        if self.num_threads is not None and int(self.num_threads) < 1:
            raise ValueError(f"num_threads must be >= 1 or null, got {self.num_threads}")

    @classmethod
    def from_mapping(cls, conf: Mapping[str, Any] | None, **overrides: Any) -> InferenceOptions:
        """Options from a conf mapping (unknown keys are an error); ``overrides`` that are not None win."""
        values = dict(conf or {})
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"predict.inference: unknown key(s) {unknown}; known: {sorted(known)}")
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)


@dataclass
class VolumePrediction:
    """An ensemble's prediction on the CT grid ``(z, y, x)``; slices not segmented are 0.

    Attributes
    ----------
    labels : numpy.ndarray
        uint8 labels.
    entropy, disagreement : numpy.ndarray
        float32 uncertainty maps in ``[0, 1]`` (:mod:`colearn_pipeline.inference.ensemble`).
    """

    labels: np.ndarray
    entropy: np.ndarray
    disagreement: np.ndarray

    def uncertainty_maps(self) -> dict[str, np.ndarray]:
        """``{"entropy": ..., "disagreement": ...}``."""
        return {"entropy": self.entropy, "disagreement": self.disagreement}


def apply_threads(options: InferenceOptions) -> None:
    """``torch.set_num_threads(options.num_threads)`` when it is set (process-wide)."""
    if options.num_threads is not None:
        torch.set_num_threads(int(options.num_threads))


class OnnxNet(torch.nn.Module):
    """A net exported to ONNX and run by ONNX Runtime on the CPU; called like the net (logits out).

    Parameters
    ----------
    model : torch.nn.Module
        The net, in eval mode, taking ``(N, 2, H, W)``.
    input_hw : (int, int)
        Its input size (the export traces one batch of it; the batch axis stays dynamic).
    threads : int
        ONNX Runtime's intra-op threads.
    """

    def __init__(self, model: torch.nn.Module, input_hw: Sequence[int], threads: int) -> None:
        super().__init__()
        import io
        import warnings

        import onnxruntime as ort

        buffer = io.BytesIO()
        example = torch.zeros(1, 2, *(int(v) for v in input_hw))
        with warnings.catch_warnings():  # the tracer's notes on the nets' shape checks
            warnings.simplefilter("ignore")
            torch.onnx.export(model.eval(), (example,), buffer, dynamo=False, input_names=["x"],
                              output_names=["logits"], dynamic_axes={"x": {0: "n"}, "logits": {0: "n"}},
                              opset_version=ONNX_OPSET)
        session_options = ort.SessionOptions()
        session_options.intra_op_num_threads = int(threads)
        session_options.inter_op_num_threads = 1
        session_options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        # no memory arena: each session would keep its peak (~1.8 GiB for the width-64 net at batch 8),
        # 5.5 GiB for an ensemble of 3 instead of 1.9 GiB; the CPU time is the same (benchmarks/predict.py)
        session_options.enable_cpu_mem_arena = False
        self.session = ort.InferenceSession(buffer.getvalue(), session_options, providers=["CPUExecutionProvider"])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``(N, C, H, W)`` of ``x`` ``(N, 2, H, W)`` (float32, CPU)."""
        (logits,) = self.session.run(None, {"x": np.ascontiguousarray(x.detach().cpu().numpy(), np.float32)})
        return torch.from_numpy(logits)


def prepare_model(model: torch.nn.Module, options: InferenceOptions, input_hw: Sequence[int] | None = None,
                  device: str | torch.device = "cpu") -> torch.nn.Module:
    """A net ready for :func:`softmax_samples`: eval mode, and by ``options``: ONNX Runtime, or channels_last.

    With ``engine: onnxruntime`` (on a CPU device; ``input_hw`` needed) the net is exported and
    wrapped in :class:`OnnxNet`; otherwise it is put in eval mode and, with ``channels_last``, its
    weights in ``channels_last`` (in place).
    """
    model.eval()
    if options.engine == "onnxruntime" and torch.device(device).type == "cpu":
        if input_hw is None:
            raise ValueError("the onnxruntime engine needs the net's input_hw to export it")
        return OnnxNet(model, input_hw, options.num_threads or torch.get_num_threads())
    if options.channels_last:
        to_channels_last(model)
    return model


def model_input(ct_hu: np.ndarray, suv: np.ndarray, index: np.ndarray, input_hw: Sequence[int]) -> np.ndarray:
    """Float32 ``(S, 2, H, W)`` network input of the slices ``index`` of a CT/SUV volume pair."""
    return network_input(resize_slices(ct_hu[index], input_hw, "image"), resize_slices(suv[index], input_hw, "image"))


def softmax_samples(
    models: Sequence[torch.nn.Module],
    x: np.ndarray,
    options: InferenceOptions,
    device: str | torch.device = "cpu",
) -> np.ndarray:
    """Softmax outputs of every net on every TTA view of ``x``, flipped back: ``(K, N, C, H, W)`` float32.

    ``K = len(models) * len(TTA_VIEWS[options.tta])``, members outer, views inner.
    """
    device = torch.device(device)
    memory = torch.channels_last if options.channels_last else torch.contiguous_format
    samples = []
    with torch.inference_mode(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=options.bf16):
        for model in models:
            for dims in TTA_VIEWS[options.tta]:
                out = []
                for i in range(0, len(x), int(options.batch_size)):
                    xb = torch.from_numpy(np.ascontiguousarray(x[i : i + int(options.batch_size)], np.float32))
                    xb = xb.to(device)
                    xb = (xb.flip(dims) if dims else xb).contiguous(memory_format=memory)
                    logits = model(xb)
                    logits = logits[0] if isinstance(logits, tuple) else logits
                    probs = torch.softmax(logits.float(), dim=1)
                    out.append((probs.flip(dims) if dims else probs).cpu().numpy())
                samples.append(np.concatenate(out))
    return np.stack(samples)


def segment_volume_ensemble(
    models: Sequence[torch.nn.Module],
    ct_hu: np.ndarray,
    suv: np.ndarray,
    slice_index: Sequence[int],
    input_hw: Sequence[int],
    options: InferenceOptions = InferenceOptions(),
    device: str | torch.device = "cpu",
) -> VolumePrediction:
    """Labels and uncertainty of an ensemble of nets for the given slices of a CT/SUV volume, on the CT grid.

    Parameters
    ----------
    models : sequence of torch.nn.Module
        Nets taking ``(N, 2, H, W)`` (CT, SUV) and returning logits ``(N, C, H, W)``, all of the
        same ``input_hw`` (:func:`prepare_model` them first for speed).
    ct_hu, suv : numpy.ndarray
        ``(z, y, x)`` CT in HU and SUV on the same grid.
    slice_index : sequence of int
        The slices to segment; every other slice is background with zero uncertainty.
    input_hw : (int, int)
        The nets' input size.
    options : InferenceOptions
    device : str or torch.device

    Returns
    -------
    VolumePrediction
    """
    if ct_hu.shape != suv.shape:
        raise ValueError(f"CT {ct_hu.shape} and SUV {suv.shape} are not on one grid")
    if not models:
        raise ValueError("no model given")
    z, rows, cols = ct_hu.shape
    index = np.asarray(slice_index, dtype=np.int64)
    if index.size and (index.min() < 0 or index.max() >= z):
        raise ValueError(f"slice_index outside the volume of {z} slices")
    result = VolumePrediction(np.zeros((z, rows, cols), np.uint8), np.zeros((z, rows, cols), np.float32),
                              np.zeros((z, rows, cols), np.float32))
    n_samples = len(models) * len(TTA_VIEWS[options.tta])
    per_slice = n_samples * 2 * _FLOAT32_BYTES * int(np.prod(input_hw)) * 4  # samples + their mean, 4 classes
    chunk = max(1, min(int(options.chunk_slices), SAMPLE_BUDGET_BYTES // per_slice))
    for start in range(0, index.size, chunk):
        part = index[start : start + chunk]
        combined = combine_samples(softmax_samples(models, model_input(ct_hu, suv, part, input_hw), options, device))
        result.labels[part] = resize_labels_nearest(combined.labels, rows, cols)
        result.entropy[part] = resize_labels_nearest(combined.entropy, rows, cols)
        result.disagreement[part] = resize_labels_nearest(combined.disagreement, rows, cols)
    return result


def segment_volume(
    model: torch.nn.Module,
    ct_hu: np.ndarray,
    suv: np.ndarray,
    slice_index: Sequence[int],
    input_hw: Sequence[int],
    *,
    batch_size: int = 8,
    device: str | torch.device = "cpu",
    chunk_slices: int = 32,
) -> np.ndarray:
    """Labels of one net for the given slices of a CT/SUV volume, on the CT grid: uint8 ``(z, y, x)``.

    :func:`segment_volume_ensemble` of one net without TTA, float32, contiguous memory format.
    """
    options = InferenceOptions(batch_size=batch_size, chunk_slices=chunk_slices, channels_last=False)
    return segment_volume_ensemble([model.eval()], ct_hu, suv, slice_index, input_hw, options, device).labels


def segment_volume_reference(
    model: torch.nn.Module,
    ct_hu: np.ndarray,
    suv: np.ndarray,
    slice_index: Sequence[int],
    input_hw: Sequence[int],
    *,
    batch_size: int = 8,
    device: str | torch.device = "cpu",
    chunk_slices: int = 32,
) -> np.ndarray:
    """The path before the speed work (argmax of the logits, autograd on): benchmarks and tests compare with it."""
    z, rows, cols = ct_hu.shape
    index = np.asarray(slice_index, dtype=np.int64)
    labels = np.zeros((z, rows, cols), dtype=np.uint8)
    for start in range(0, index.size, max(1, int(chunk_slices))):
        part = index[start : start + max(1, int(chunk_slices))]
        predicted = predict_labels(model, model_input(ct_hu, suv, part, input_hw), batch_size, device)
        labels[part] = resize_labels_nearest(predicted.astype(np.uint8), rows, cols)
    return labels


def labels_to_ct_volume(labels: np.ndarray, study: Mapping[str, Any]) -> np.ndarray:
    """Place a model-input ``(S, H, W)`` label stack into a uint8 volume of the study's CT shape ``(z, y, x)``."""
    z, rows, cols = (int(v) for v in np.asarray(study["ct_shape_zyx"]))
    idx = np.asarray(study["slice_index"], dtype=np.int64)
    if len(idx) != len(labels):
        raise ValueError(f"{len(labels)} label slices but {len(idx)} slice indices")
    if idx.size and (idx.min() < 0 or idx.max() >= z):
        raise ValueError(f"slice_index outside the CT volume of {z} slices")
    volume = np.zeros((z, rows, cols), dtype=np.uint8)
    volume[idx] = resize_labels_nearest(np.asarray(labels, dtype=np.uint8), rows, cols)
    return volume


def predict_model_input(model: torch.nn.Module, study: Mapping[str, Any], device: str | torch.device = "cpu",
                        batch_size: int = 8) -> np.ndarray:
    """Label stack ``(S, H, W)`` of a net for one study's model input (the NPZ contract)."""
    return predict_labels(model, network_input(study["ct_hu"], study["suv"]), batch_size, device)


def write_label_nifti(volume: np.ndarray, study: Mapping[str, Any], out: str | os.PathLike) -> Path:
    """Write a ``(z, y, x)`` label volume with a geometry (``spacing_xyz_mm``, ``origin_xyz_mm``,
    ``direction`` in SimpleITK order) as NIfTI, atomically."""
    import SimpleITK as sitk

    from colearn_pipeline.datasets._atomic import atomic_write

    image = sitk.GetImageFromArray(np.ascontiguousarray(volume, dtype=np.uint8))
    image.SetSpacing([float(v) for v in np.asarray(study["spacing_xyz_mm"])])
    image.SetOrigin([float(v) for v in np.asarray(study["origin_xyz_mm"])])
    image.SetDirection([float(v) for v in np.asarray(study["direction"])])
    out = Path(out)
    atomic_write(out, lambda tmp: sitk.WriteImage(image, tmp, useCompression=True))
    return out
