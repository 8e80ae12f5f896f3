"""Building blocks of the co-learning CNN and its baselines (Kumar et al., Sec. III-C to III-E).

Each block is a small :class:`torch.nn.Module` with its tensor shapes in its docstring; the four
nets in :mod:`colearn_pipeline.models.nets` are compositions of these blocks, so that the
baselines differ from the co-learning net only in how the two modalities are fused.

Choices where the paper and the authors' TensorFlow code (``ashnilkumar/colearn``) differ or
where one of them is silent are written in the docstring of the block they concern. The rule:
follow the paper where it states something, follow the code where the paper is silent.

Notation: ``N`` batch, ``c`` width (feature channels, 64 in the paper), ``H x W`` the input
slice size, ``h x w`` the size at some scale.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

__all__ = [
    "BN_EPS",
    "BN_MOMENTUM",
    "AuthorsOutputHead",
    "CoLearningUnit",
    "ConvNormAct",
    "ConvSettings",
    "Encoder",
    "EncoderBlock",
    "OutputHead",
    "PixelIntermix",
    "Reconstruction",
    "ReconstructionBlock",
    "TwoConv",
    "init_weights",
    "standardise_per_slice",
]

#: Batch-norm epsilon of the authors' code (``tf.layers.batch_normalization(epsilon=0.001)``);
#: the paper is silent.
BN_EPS: float = 1e-3
#: Batch-norm running-average momentum in PyTorch's convention; the authors' code uses TF's
#: ``momentum=0.9`` (decay of the running average), which is PyTorch's ``momentum=0.1``.
BN_MOMENTUM: float = 0.1
#: Factor of the 2x2 max pooling and of the nearest-neighbour upsampling (Table I).
SCALE_FACTOR: int = 2


@dataclass(frozen=True)
class ConvSettings:
    """What every conv of a net shares, built once by the net and handed down to every block.

    MONAI's ``basic_unet`` hands its blocks ``act`` and ``norm``; here the one bundle carries the
    kernel size, the Leaky ReLU slope and the batch-norm settings, so a block's signature is its
    channels plus ``conv``.

    Attributes
    ----------
    kernel_size
        Odd square kernel size of the 2D convolutions and deconvolutions (3 in Table I); for a
        :class:`CoLearningUnit`, the in-plane size ``k`` of its ``k x k x 2`` kernel.
    negative_slope
        Leaky ReLU slope alpha (0.1 in Table I).
    bn_eps
        Batch-norm epsilon (:data:`BN_EPS`).
    bn_momentum
        Batch-norm running-average momentum, PyTorch's convention (:data:`BN_MOMENTUM`).
    act_before_norm
        :class:`ConvNormAct` order: False conv -> batch norm -> Leaky ReLU (the paper's text),
        True conv -> Leaky ReLU -> batch norm (the authors' code).
    """

    kernel_size: int = 3
    negative_slope: float = 0.1
    bn_eps: float = BN_EPS
    bn_momentum: float = BN_MOMENTUM
    act_before_norm: bool = False


def init_weights(module: nn.Module, negative_slope: float = 0.1) -> None:
    """He-initialise every convolution kernel of ``module`` and zero its biases.

    The authors' code uses ``variance_scaling_initializer()`` (He, fan-in, variance 2/fan_in)
    and ``zeros_initializer()`` for biases on the encoder, co-learning, deconvolution and output
    kernels (the paper is silent). Here every kernel gets He-normal initialisation with the
    Leaky-ReLU gain of ``negative_slope``. For :class:`torch.nn.ConvTranspose2d` the weight
    tensor is ``(in, out, k, k)``, so PyTorch's ``fan_out`` of it is ``in * k * k``, the true
    fan-in of a stride-1 transposed convolution; that mode is used for it. Batch-norm layers keep
    their defaults (scale 1, shift 0).

    Parameters
    ----------
    module
        Any module; its sub-modules are visited recursively.
    negative_slope
        Slope of the Leaky ReLU that follows (sets the He gain).
    """
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.Conv3d)):
            nn.init.kaiming_normal_(m.weight, a=negative_slope, mode="fan_in", nonlinearity="leaky_relu")
        elif isinstance(m, nn.ConvTranspose2d):
            nn.init.kaiming_normal_(m.weight, a=negative_slope, mode="fan_out", nonlinearity="leaky_relu")
        else:
            continue
        if m.bias is not None:
            nn.init.zeros_(m.bias)


class ConvNormAct(nn.Sequential):
    """One 2D convolution, batch normalisation, then Leaky ReLU: the paper's F-hat = psi(W * X + b).

    Order: the paper (Sec. III-C) states that batch normalisation normalises the conv output and
    that the Leaky ReLU is applied "after feature map normalization"; the authors' code applies
    the activation *before* batch norm. The paper states it, so the paper's order is the default;
    ``conv.act_before_norm`` gives the code's order (model ``variant: authors_code``).
    The convolution keeps its bias ``b`` as in the paper's formula (it is redundant before batch
    norm, but the paper and the code both have it).

    Shapes: ``(N, in_channels, h, w) -> (N, out_channels, h, w)`` (``same`` padding, stride 1).

    Parameters
    ----------
    in_channels, out_channels
        Channels in and out.
    conv
        Kernel size (odd), Leaky ReLU slope and batch-norm settings (:class:`ConvSettings`).
    """

    def __init__(self, in_channels: int, out_channels: int, conv: ConvSettings = ConvSettings()):
        kernel_size = conv.kernel_size
        if kernel_size % 2 != 1:
            raise ValueError(f"kernel_size must be odd for 'same' padding, got {kernel_size}")
        norm = nn.BatchNorm2d(out_channels, eps=conv.bn_eps, momentum=conv.bn_momentum)
        act = nn.LeakyReLU(conv.negative_slope)
        super().__init__(
            nn.Conv2d(in_channels, out_channels, kernel_size, padding=kernel_size // 2, bias=True),
            *((act, norm) if conv.act_before_norm else (norm, act)),
        )


class TwoConv(nn.Sequential):
    """Two :class:`ConvNormAct` in a row, the feature-extraction part of every block.

    Shapes: ``(N, in_channels, h, w) -> (N, out_channels, h, w)``.

    Parameters
    ----------
    in_channels, out_channels
        Channels in and out (the second conv is ``out -> out``).
    conv
        As in :class:`ConvNormAct`.
    """

    def __init__(self, in_channels: int, out_channels: int, conv: ConvSettings = ConvSettings()):
        super().__init__(
            ConvNormAct(in_channels, out_channels, conv),
            ConvNormAct(out_channels, out_channels, conv),
        )


class EncoderBlock(nn.Sequential):
    """Encoder block (Sec. III-C, Fig. 1): :class:`TwoConv` then 2x2 max pooling with stride 2.

    Shapes: ``(N, in_channels, h, w) -> (N, out_channels, h/2, w/2)``.

    The block's *pooled* output is what the co-learning unit of its scale sees, as in the
    authors' code (the paper is silent), so the fused maps lie at 1/2 ... 1/2**depth of the input.

    Parameters
    ----------
    in_channels, out_channels
        Channels in and out.
    conv
        As in :class:`ConvNormAct`.
    pool_size
        Max-pooling window and stride (2 in Table I).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        conv: ConvSettings = ConvSettings(),
        pool_size: int = SCALE_FACTOR,
    ):
        super().__init__(
            TwoConv(in_channels, out_channels, conv),
            nn.MaxPool2d(pool_size, stride=pool_size),
        )


class Encoder(nn.Module):
    """A modality encoder: ``depth`` :class:`EncoderBlock` in a row, all ``width`` channels wide.

    Every conv has ``width`` filters, with no growth with depth (Table I's single ``c``; the
    authors' code uses ``num_filters`` for every block).

    Shapes: ``(N, in_channels, H, W) -> [(N, width, H/2**k, W/2**k) for k = 1 .. depth]``, the
    pooled output of every block, finest first.

    Parameters
    ----------
    in_channels
        1 for a single-modality encoder (CT, PET, or the FS pre-fused image), 2 for TC.
    width
        Channels ``c`` of every block (64 in Table I).
    depth
        Number of blocks (4 in Fig. 1).
    conv
        As in :class:`ConvNormAct`.
    """

    def __init__(
        self,
        in_channels: int = 1,
        width: int = 64,
        depth: int = 4,
        conv: ConvSettings = ConvSettings(),
    ):
        super().__init__()
        if depth < 1:
            raise ValueError(f"depth must be >= 1, got {depth}")
        self.blocks = nn.ModuleList(
            EncoderBlock(in_channels if i == 0 else width, width, conv) for i in range(depth)
        )

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Return the pooled output of every block, finest (1/2) first."""
        features = []
        for block in self.blocks:
            x = block(x)
            features.append(x)
        return features


class CoLearningUnit(nn.Module):
    """Co-learning unit (Sec. III-D, Eq. 2-3, Fig. 2): a 3D conv over (modality, h, w).

    The CT and PET feature maps are stacked on a modality axis, ``(N, c, 2, h, w)`` (CT at
    modality index 0, PET at 1); a :class:`torch.nn.Conv3d` with ``c`` input and ``2c`` output
    channels and kernel ``(2, k, k)`` runs over it, padded in-plane by ``k // 2`` but not over
    the modality axis, so the modality axis becomes 1 and is squeezed. Bias, no normalisation
    (the paper: the fusion map directly sets the input distribution of the following layers),
    then Leaky ReLU (Eq. 3). The slope is the net's ``conv.negative_slope`` (Table I's alpha = 0.1,
    "as with the encoders"); the authors' code uses ``tf.nn.leaky_relu``'s default 0.2 here,
    but the paper states the activation and its alpha, so the paper is followed.

    Shapes: ``ct, pet: (N, c, h, w) -> fusion map (N, 2c, h, w)``. The first ``c`` channels of
    the fusion map weight the CT features, the last ``c`` the PET features (Eq. 4, see
    :meth:`fuse`).

    Parameters
    ----------
    channels
        ``c``, channels of each modality's feature map.
    conv
        ``conv.kernel_size`` is the odd in-plane size ``k`` of the 3D kernel (3 in Table I: 3x3x2;
        a net hands its ``fusion_kernel_size`` here), ``conv.negative_slope`` the Leaky ReLU slope;
        the batch-norm settings are unused (no normalisation).
    num_modalities
        Size of the modality axis and the kernel's depth (2: CT and PET).
    """

    def __init__(self, channels: int, conv: ConvSettings = ConvSettings(), num_modalities: int = 2):
        super().__init__()
        kernel_size = conv.kernel_size
        if kernel_size % 2 != 1:
            raise ValueError(f"fusion kernel_size must be odd for 'same' in-plane padding, got {kernel_size}")
        self.num_modalities = num_modalities
        self.conv = nn.Conv3d(
            channels,
            num_modalities * channels,
            kernel_size=(num_modalities, kernel_size, kernel_size),
            padding=(0, kernel_size // 2, kernel_size // 2),
            bias=True,
        )
        self.act = nn.LeakyReLU(conv.negative_slope)

    def forward(self, ct: torch.Tensor, pet: torch.Tensor) -> torch.Tensor:
        """Fusion map ``F_fusion = psi(W_multi * X_multi + b_multi)``, ``(N, 2c, h, w)``."""
        stacked = torch.stack([ct, pet], dim=2)  # (N, c, 2, h, w)
        return self.act(self.conv(stacked)).squeeze(2)

    @staticmethod
    def fuse(fusion_map: torch.Tensor, ct: torch.Tensor, pet: torch.Tensor) -> torch.Tensor:
        """Fusion operation (Eq. 4, Fig. 3): ``F_fused = F_fusion * (F_CT (+) F_PET)``.

        Shapes: ``fusion_map (N, 2c, h, w)``, ``ct, pet (N, c, h, w) -> (N, 2c, h, w)``;
        ``(+)`` is channel stacking ``cat([ct, pet], dim=1)``, ``*`` element-wise.
        """
        return fusion_map * torch.cat([ct, pet], dim=1)


class ReconstructionBlock(nn.Module):
    """Reconstruction block (Sec. III-E): nearest x2 upsampling, 3x3 deconvolution, :class:`TwoConv`.

    The deconvolution is a :class:`torch.nn.ConvTranspose2d` with stride 1 and ``same`` padding
    after the nearest-neighbour upsampling (authors' code; the paper only says "one upsampling
    layer, one deconvolutional layer"). It is linear, with no batch norm or activation after it,
    as in the authors' co-learning code (they compute a Leaky ReLU of it but never use it) and as
    the issue's reading of Sec. III-E (batch norm and Leaky ReLU belong to the two convs).
    In the authors' *baseline* code the deconvolution's output is computed but unused (the first
    conv reads the upsampled map); here every net uses this same block, so the baselines differ
    from the co-learning net only in fusion (the paper's stated intent).

    Shapes: ``(N, in_channels, h, w) -> (N, out_channels, 2h, 2w)``.

    Parameters
    ----------
    in_channels, out_channels
        Channels in (the stacked input) and out (``c``).
    conv
        As in :class:`ConvNormAct`; ``conv.kernel_size`` is also the deconvolution's kernel size
        (3 in Table I).
    scale_factor
        Upsampling factor (2).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        conv: ConvSettings = ConvSettings(),
        scale_factor: int = SCALE_FACTOR,
    ):
        super().__init__()
        self.upsample = nn.Upsample(scale_factor=scale_factor, mode="nearest")
        self.deconv = nn.ConvTranspose2d(
            in_channels, out_channels, conv.kernel_size, stride=1, padding=conv.kernel_size // 2, bias=True
        )
        self.convs = TwoConv(out_channels, out_channels, conv)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, in_channels, h, w) -> (N, out_channels, 2h, 2w)``."""
        return self.convs(self.deconv(self.upsample(x)))


class Reconstruction(nn.Module):
    """Reconstruction component: ``depth`` :class:`ReconstructionBlock`, deepest first.

    The deepest block takes only the deepest scale's feature map; every later block takes the
    skip feature map of its scale stacked (channel concatenation, skip first) with the previous
    block's output (Sec. III-E: "the output co-learned feature map from a co-learning unit
    stacked with the output of any prior reconstruction block"). Without skips (``skip_channels
    = 0``) every later block takes only the previous block's output.

    Shapes: ``deepest (N, deepest_channels, H/2**depth, W/2**depth)``, ``skips[k-1] (N,
    skip_channels, H/2**k, W/2**k)`` for ``k = 1 .. depth - 1`` (finest first) ``-> (N, width,
    H, W)``.

    Parameters
    ----------
    deepest_channels
        Channels of the deepest input (``2c`` for co-learning and TB, ``c`` for TC and FS).
    skip_channels
        Channels of each skip input, 0 for none.
    width, depth, conv
        As in :class:`Encoder`.
    """

    def __init__(
        self,
        deepest_channels: int,
        skip_channels: int = 0,
        width: int = 64,
        depth: int = 4,
        conv: ConvSettings = ConvSettings(),
    ):
        super().__init__()
        self.skip_channels = skip_channels
        self.blocks = nn.ModuleList(
            ReconstructionBlock(deepest_channels if i == 0 else skip_channels + width, width, conv)
            for i in range(depth)
        )

    def forward(self, deepest: torch.Tensor, skips: Sequence[torch.Tensor] = ()) -> torch.Tensor:
        """Reconstruct the full-size ``(N, width, H, W)`` map; ``skips`` finest first."""
        expected = (len(self.blocks) - 1) if self.skip_channels else 0
        if len(skips) != expected:
            raise ValueError(f"Reconstruction expects {expected} skip inputs, got {len(skips)}")
        x = self.blocks[0](deepest)
        for i, block in enumerate(self.blocks[1:]):
            if self.skip_channels:
                x = torch.cat([skips[len(skips) - 1 - i], x], dim=1)
            x = block(x)
        return x


class OutputHead(nn.Conv2d):
    """The final 1x1 convolution to per-pixel class activations ``o`` (Sec. III-E, Eq. 5).

    The paper maps the 64-channel feature vectors with a 1x1 convolution to the observations
    ``o`` and applies the softmax to them; the authors' code inserts a Leaky ReLU and a batch
    norm between the 1x1 conv and the softmax. The paper states what ``o`` is, so the head is
    the plain 1x1 convolution (with bias) and its output are the logits.

    Shapes: ``(N, in_channels, H, W) -> (N, num_classes, H, W)``.
    """

    def __init__(self, in_channels: int, num_classes: int = 4):
        super().__init__(in_channels, num_classes, kernel_size=1, bias=True)


class AuthorsOutputHead(nn.Sequential):
    """The authors' code's head: 1x1 convolution, Leaky ReLU, then batch norm; its output are the logits.

    Model ``variant: authors_code`` (the paper's text: :class:`OutputHead`). The Leaky ReLU takes
    the net's ``conv.negative_slope`` and the batch norm its settings.

    Shapes: ``(N, in_channels, H, W) -> (N, num_classes, H, W)``.
    """

    def __init__(self, in_channels: int, num_classes: int = 4, conv: ConvSettings = ConvSettings()):
        super().__init__(
            nn.Conv2d(in_channels, num_classes, kernel_size=1, bias=True),
            nn.LeakyReLU(conv.negative_slope),
            nn.BatchNorm2d(num_classes, eps=conv.bn_eps, momentum=conv.bn_momentum),
        )


def standardise_per_slice(x: torch.Tensor) -> torch.Tensor:
    """Standardise every ``(h, w)`` slice of every channel to zero mean and unit variance.

    Same convention as TensorFlow's ``per_image_standardization`` (used by the authors' FS code):
    population standard deviation, floored at ``1 / sqrt(h * w)`` so a constant slice maps to
    zeros instead of dividing by zero.

    Shapes: ``(N, C, h, w) -> (N, C, h, w)``.
    """
    num_pixels = x.shape[-2] * x.shape[-1]
    mean = x.mean(dim=(-2, -1), keepdim=True)
    std = x.std(dim=(-2, -1), keepdim=True, correction=0)
    return (x - mean) / std.clamp_min(num_pixels**-0.5)


class PixelIntermix(nn.Module):
    """Pixel intermixing for the FS baseline: one pre-fused PET-CT image per slice.

    ``blend = w * std(CT) + (1 - w) * std(PET)``, then ``std(blend)``, with ``std`` the
    per-slice standardisation :func:`standardise_per_slice`. With ``w = 0.5`` this equals the
    authors' FS code (sum of the standardised slices, standardised again). It has no parameters.

    Shapes: ``(N, 2, H, W)`` (channel 0 CT, channel 1 PET) ``-> (N, 1, H, W)``.

    Parameters
    ----------
    blend_weight
        ``w``, the CT weight, in ``[0, 1]``.
    """

    def __init__(self, blend_weight: float = 0.5):
        super().__init__()
        if not 0.0 <= blend_weight <= 1.0:
            raise ValueError(f"fs_blend_weight must lie in [0, 1], got {blend_weight}")
        self.blend_weight = float(blend_weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, 2, H, W) -> (N, 1, H, W)``."""
        s = standardise_per_slice(x)
        blend = self.blend_weight * s[:, 0:1] + (1.0 - self.blend_weight) * s[:, 1:2]
        return standardise_per_slice(blend)

    def extra_repr(self) -> str:
        return f"blend_weight={self.blend_weight}"
