"""The paper's loss (Sec. III-F, Eq. 6-8): class-scaled pixel cross-entropy plus an L2 term.

``L(O) = 1/|O| sum_o S(o) E(o) + lambda * R(W)`` with

- ``E(o) = -log p_T(o)(o)``, the cross-entropy of pixel ``o`` against its true class ``T(o)``
  (Eq. 8), ``p`` the softmax of the logits (Eq. 5);
- ``S(o) = 1 - n_T(o) / sum_r n_r`` (Eq. 7), with ``n_r`` the number of ground-truth pixels of
  class ``r`` *in the image that holds o* (per image, as in the authors' code), so
  ``sum_r n_r = H * W``;
- the mean runs over every pixel of every image in the batch (all images have the same size,
  so this is also the mean of the per-image means);
- ``R(W)`` is :func:`l2_penalty`: **half** the sum of squares of every convolution kernel
  (2D, 3D and transposed; biases and batch-norm parameters excluded). This is what the
  authors' code adds (``tf.contrib.layers.l2_regularizer(0.1)`` computes ``0.1 *
  tf.nn.l2_loss(w) = 0.1 * sum(w**2) / 2``); the paper writes ``lambda * sum_j w_j**2``
  without the half, and Table I's ``lambda = 0.1`` is the code's scale, so the code's
  definition is the one that reproduces the paper's setting. The code regularises only some
  kernels (not its reconstruction convs); the paper says "all weights", so every conv kernel
  is regularised here. A net built with ``variant: authors_code`` (or ``decoder_l2_lambda``)
  carries ``decoder_l2_lambda`` = 2e-4: its reconstruction convs then get that strength instead
  of ``lambda`` (the code's split: only its 2e-4 conv decay reaches them).

Not included: the authors' code also adds ``0.0002 * sum(l2_loss)`` over every variable with
"conv" in its name (kernels and conv biases). That is plain weight decay; to reproduce it pass
``weight_decay=2e-4`` to :class:`torch.optim.SGD` for the conv parameters (the gradient of
``wd/2 * ||w||**2`` is ``wd * w``, which is what SGD's ``weight_decay`` adds).

Numerics: ``log_softmax`` is used instead of the code's ``log(softmax + 1e-9)``; the loss is
computed in float32 even when the logits are bf16 / fp16 (autocast).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["DEFAULT_L2_LAMBDA", "class_scale_map", "class_scaled_cross_entropy", "colearn_loss", "decoder_l2_penalty",
           "l2_penalty"]

#: Regularisation strength lambda of Table I.
DEFAULT_L2_LAMBDA: float = 0.1

_CONV_TYPES = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)


def _check(logits: torch.Tensor, target: torch.Tensor) -> None:
    if logits.ndim != 4:
        raise ValueError(f"logits must be (N, C, H, W), got shape {tuple(logits.shape)}")
    n, c, h, w = logits.shape
    if tuple(target.shape) != (n, h, w):
        raise ValueError(f"target must be (N, H, W) = {(n, h, w)} of class indices, got shape {tuple(target.shape)}")
    if target.dtype.is_floating_point or target.dtype == torch.bool:
        raise ValueError(f"target must hold integer class indices, got dtype {target.dtype}")
    if target.numel() and (int(target.min()) < 0 or int(target.max()) >= c):
        raise ValueError(
            f"target values must lie in [0, {c - 1}] for {c} classes, "
            f"got range [{int(target.min())}, {int(target.max())}]"
        )


def class_scale_map(target: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Per-pixel scale ``S(o) = 1 - n_T(o) / sum_r n_r`` (Eq. 7), counts per image.

    Shapes: ``target (N, H, W)`` integer classes ``-> (N, H, W)`` float32.
    """
    n = target.shape[0]
    flat = target.reshape(n, -1).long()
    counts = torch.zeros(n, num_classes, device=target.device, dtype=torch.float32)
    counts.scatter_add_(1, flat, torch.ones_like(flat, dtype=torch.float32))
    class_scale = 1.0 - counts / counts.sum(dim=1, keepdim=True)  # (N, C)
    return class_scale.gather(1, flat).reshape(target.shape)


def class_scaled_cross_entropy(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Class-scaled pixel cross-entropy, ``1/|O| sum_o S(o) E(o)`` (Eq. 6 without L2, 7, 8).

    Parameters
    ----------
    logits
        ``(N, C, H, W)``, the net's output before the softmax.
    target
        ``(N, H, W)`` integer class indices in ``[0, C)``.

    Returns
    -------
    torch.Tensor
        Scalar (float32), the mean over all ``N * H * W`` pixels. An image of a single class
        has ``S = 0`` everywhere and contributes zero.
    """
    _check(logits, target)
    log_p = F.log_softmax(logits.float(), dim=1)
    ce = -log_p.gather(1, target.long().unsqueeze(1)).squeeze(1)  # (N, H, W)
    return (class_scale_map(target, logits.shape[1]) * ce).mean()


def l2_penalty(model: nn.Module) -> torch.Tensor:
    """``R(W) = 1/2 * sum`` of squares of every convolution kernel of ``model``.

    Covers :class:`torch.nn.Conv2d`, :class:`~torch.nn.Conv3d` and
    :class:`~torch.nn.ConvTranspose2d` (and the 1D / 3D variants) weights: every conv of the
    encoders, the co-learning units, the deconvolutions, the reconstruction convs and the 1x1
    output conv. Biases and batch-norm scale/shift are excluded. Equals TensorFlow's
    ``tf.nn.l2_loss`` summed over those kernels (multiply by lambda for the regulariser).

    Returns
    -------
    torch.Tensor
        Scalar, float32, on the device of the model's parameters (0 for a model without convs).
    """
    terms = [m.weight.float().pow(2).sum() for m in model.modules() if isinstance(m, _CONV_TYPES)]
    if not terms:
        p = next(model.parameters(), None)
        return torch.zeros((), device=p.device if p is not None else None)
    return 0.5 * torch.stack(terms).sum()


def _half_sum_of_squares(convs: list[nn.Module], model: nn.Module) -> torch.Tensor:
    terms = [m.weight.float().pow(2).sum() for m in convs]
    if not terms:
        p = next(model.parameters(), None)
        return torch.zeros((), device=p.device if p is not None else None)
    return 0.5 * torch.stack(terms).sum()


def decoder_l2_penalty(model: nn.Module) -> torch.Tensor:
    """The part of :func:`l2_penalty` from the reconstruction blocks' convs (the two convs of every
    :class:`~colearn_pipeline.models.blocks.ReconstructionBlock`, not its deconvolution)."""
    from colearn_pipeline.models.blocks import ReconstructionBlock

    convs = [m for block in model.modules() if isinstance(block, ReconstructionBlock)
             for m in block.convs.modules() if isinstance(m, _CONV_TYPES)]
    return _half_sum_of_squares(convs, model)


def colearn_loss(
    logits: torch.Tensor, target: torch.Tensor, model: nn.Module, l2_lambda: float = DEFAULT_L2_LAMBDA
) -> torch.Tensor:
    """Total loss of Eq. 6: :func:`class_scaled_cross_entropy` ``+ l2_lambda *`` :func:`l2_penalty`.

    Parameters
    ----------
    logits
        ``(N, C, H, W)`` net output.
    target
        ``(N, H, W)`` integer classes.
    model
        The net whose conv kernels are regularised; its ``decoder_l2_lambda`` (when not None)
        replaces ``l2_lambda`` on the reconstruction convs (:func:`decoder_l2_penalty`).
    l2_lambda
        Regularisation strength lambda (0.1 in Table I); 0 skips the L2 term.

    Returns
    -------
    torch.Tensor
        Scalar float32.
    """
    loss = class_scaled_cross_entropy(logits, target)
    decoder_lambda = getattr(model, "decoder_l2_lambda", None)
    if decoder_lambda is not None:
        decoder = decoder_l2_penalty(model)
        return loss + l2_lambda * (l2_penalty(model) - decoder) + float(decoder_lambda) * decoder
    if l2_lambda:
        loss = loss + l2_lambda * l2_penalty(model)
    return loss
