"""The co-learning CNN (Fig. 1) and the TB / TC / FS baselines (Sec. III-G), built from blocks.

Every net takes ``x`` of shape ``(N, 2, H, W)`` (channel 0 CT, channel 1 PET, each slice's
channels already standardised) and returns logits ``(N, num_classes, H, W)``; callers apply the
softmax (:func:`predict_proba`). ``H`` and ``W`` must be divisible by ``2**depth``.

The four nets share the encoder, reconstruction and output blocks and differ only in fusion:

=========  ==========================================================================
colearn    two encoders; a co-learning unit per scale; fused maps feed reconstruction
tb         two encoders; features concatenated only before reconstruction (late)
tc         one encoder whose first conv takes CT and PET as two channels (early)
fs         one encoder on the pixel-intermixed CT/PET image (:class:`PixelIntermix`)
=========  ==========================================================================

Ablation controls (not in the paper; they ask whether a win is due to the fusion maps):

=============  ======================================================================
tb_skips       TB with per-scale skips: the co-learning net with every fusion map = 1
tb_skips_conv  capacity-matched control: tb_skips plus, at every scale, the co-learning
               unit's conv *added* to ``cat([CT, PET])`` instead of multiplying it; the
               same parameters as the co-learning net (exactly), no multiplicative gate
=============  ======================================================================

Skip connections of the baselines: in the paper's Fig. 1 every skip input of the reconstruction
goes through a co-learning unit; the baselines are Fig. 1 "with no co-learning component"
(Sec. III-G), and in the authors' TensorFlow baseline code the reconstruction takes only the
deepest (for TB: concatenated) encoder output, with no skips. The paper does not say more, so
the code is followed: by default (``baseline_skips=False``) the baselines' reconstruction has no
skip inputs. ``baseline_skips=True`` gives the ablation in which each baseline's reconstruction
gets its per-scale encoder features (TB: ``cat([CT, PET])``) where the co-learning net gets its
fused maps, i.e. TB becomes the co-learning net with every fusion map fixed to 1.

Variant (``variant``, :class:`Variant`): ``"paper"`` (default) follows the paper's text;
``"authors_code"`` the authors' released TensorFlow code in its four differences: the co-learning
unit's Leaky ReLU slope 0.2 (TF's default; paper 0.1), a head of 1x1 conv, Leaky ReLU and batch
norm on the logits (paper: the 1x1 conv), conv -> Leaky ReLU -> batch norm (paper: conv -> batch
norm -> Leaky ReLU) and L2 2e-4 on the reconstruction convs (paper: lambda on every conv; read
by :func:`colearn_pipeline.models.loss.colearn_loss`). Each switch can also be set on its own.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import Any

import torch
from torch import nn

from colearn_pipeline.models.blocks import (
    SCALE_FACTOR,
    AuthorsOutputHead,
    CoLearningUnit,
    ConvSettings,
    Encoder,
    OutputHead,
    PixelIntermix,
    Reconstruction,
    init_weights,
)

__all__ = [
    "DEFAULTS",
    "MODEL_NAMES",
    "NUM_INPUT_CHANNELS",
    "CoLearnNet",
    "FusedInputNet",
    "SegmentationNet",
    "TwoBranchNet",
    "TwoChannelNet",
    "ABLATION_NAMES",
    "TwoBranchSkipNet",
    "TwoBranchAdditiveNet",
    "VARIANTS",
    "Variant",
    "build_model",
    "count_parameters",
    "predict_proba",
    "to_channels_last",
]

#: Names accepted by :func:`build_model`, in the order of Table II.
MODEL_NAMES: tuple[str, ...] = ("colearn", "tb", "tc", "fs")
#: Ablation nets, also accepted by :func:`build_model`.
ABLATION_NAMES: tuple[str, ...] = ("tb_skips", "tb_skips_conv")
#: Channels of every net's input: 0 CT, 1 PET.
NUM_INPUT_CHANNELS: int = 2
#: Keyword arguments of :func:`build_model` and their defaults (Table I; ``fs_blend_weight`` from
#: the authors' FS code, ``baseline_skips`` from the authors' baseline code).
DEFAULTS: dict[str, Any] = {
    "width": 64,
    "depth": 4,
    "num_classes": 4,
    "kernel_size": 3,
    "fusion_kernel_size": 3,
    "negative_slope": 0.1,
    "fs_blend_weight": 0.5,
    "baseline_skips": False,
    "variant": "paper",
    # each switch of the variant on its own; None takes the variant's value
    "fusion_negative_slope": None,
    "head": None,
    "act_before_norm": None,
    "decoder_l2_lambda": None,
}
#: Heads: the paper's plain 1x1 conv, or the authors' 1x1 conv -> Leaky ReLU -> batch norm.
HEADS: tuple[str, ...] = ("conv", "conv_act_bn")


@dataclass(frozen=True)
class Variant:
    """What differs between the paper's text and the authors' code (module docstring).

    Attributes
    ----------
    fusion_negative_slope
        Leaky ReLU slope of the co-learning units (and ``tb_skips_conv``'s units); None: the
        net's ``negative_slope`` (the paper: alpha "as with the encoders").
    head
        ``"conv"`` (:class:`OutputHead`) or ``"conv_act_bn"`` (:class:`AuthorsOutputHead`).
    act_before_norm
        Conv -> Leaky ReLU -> batch norm in every conv block (the code) instead of conv -> batch
        norm -> Leaky ReLU (the paper).
    decoder_l2_lambda
        L2 strength on the reconstruction blocks' convs; None: ``training.l2_lambda`` there too.
    """

    fusion_negative_slope: float | None = None
    head: str = "conv"
    act_before_norm: bool = False
    decoder_l2_lambda: float | None = None

    def __post_init__(self) -> None:
        if self.head not in HEADS:
            raise ValueError(f"head must be one of {HEADS}, got {self.head!r}")


#: The named variants (model ``variant``).
VARIANTS: dict[str, Variant] = {
    "paper": Variant(),
    "authors_code": Variant(fusion_negative_slope=0.2, head="conv_act_bn", act_before_norm=True,
                            decoder_l2_lambda=2e-4),
}


def resolve_variant(variant: str | Variant = "paper", **switches: Any) -> Variant:
    """The named variant with any switch given (not None) replaced."""
    if isinstance(variant, Variant):
        base = variant
    elif variant in VARIANTS:
        base = VARIANTS[variant]
    else:
        raise ValueError(f"unknown model variant {variant!r}; expected one of {sorted(VARIANTS)}")
    names = {f.name for f in fields(Variant)}
    unknown = sorted(set(switches) - names)
    if unknown:
        raise TypeError(f"unknown variant switch(es) {unknown}; accepted: {sorted(names)}")
    return replace(base, **{k: v for k, v in switches.items() if v is not None})


class SegmentationNet(nn.Module):
    """Common base: the hyper-parameters, the output head and the input check.

    ``kernel_size`` and ``negative_slope`` are bundled once into :attr:`conv_settings`
    (:class:`~colearn_pipeline.models.blocks.ConvSettings`), which the nets hand to every block.

    Parameters
    ----------
    width
        Channels ``c`` of every conv (64 in Table I).
    depth
        Encoder and reconstruction blocks (4 in Fig. 1); ``H`` and ``W`` must be divisible by
        ``2**depth``.
    num_classes
        Output classes (4: background, lung, mediastinum, tumour).
    kernel_size
        2D conv and deconvolution kernel size (3).
    negative_slope
        Leaky ReLU slope alpha (0.1).
    variant
        Paper's text or authors' code (:class:`Variant`).
    """

    def __init__(self, width: int, depth: int, num_classes: int, kernel_size: int, negative_slope: float,
                 variant: Variant = VARIANTS["paper"]):
        super().__init__()
        for name, value in (("width", width), ("depth", depth), ("num_classes", num_classes)):
            if int(value) < 1:
                raise ValueError(f"{name} must be >= 1, got {value}")
        self.width = int(width)
        self.depth = int(depth)
        self.num_classes = int(num_classes)
        self.variant = variant
        self.conv_settings = ConvSettings(kernel_size=int(kernel_size), negative_slope=float(negative_slope),
                                          act_before_norm=bool(variant.act_before_norm))
        if variant.head == "conv":
            self.head = OutputHead(self.width, self.num_classes)
        else:
            self.head = AuthorsOutputHead(self.width, self.num_classes, self.conv_settings)
        #: read by colearn_loss: L2 strength of the reconstruction convs (None: the net-wide lambda)
        self.decoder_l2_lambda = variant.decoder_l2_lambda

    @property
    def fusion_negative_slope(self) -> float:
        """Leaky ReLU slope of the co-learning units."""
        slope = self.variant.fusion_negative_slope
        return self.conv_settings.negative_slope if slope is None else float(slope)

    @property
    def size_divisor(self) -> int:
        """``2**depth``: ``H`` and ``W`` must be multiples of it."""
        return SCALE_FACTOR**self.depth

    def check_input(self, x: torch.Tensor) -> None:
        """Raise :class:`ValueError` unless ``x`` is ``(N, 2, H, W)`` with ``H, W`` divisible by ``2**depth``."""
        if x.ndim != 4 or x.shape[1] != NUM_INPUT_CHANNELS:
            raise ValueError(
                f"{type(self).__name__} expects input of shape (N, {NUM_INPUT_CHANNELS}, H, W) "
                f"(channel 0 CT, channel 1 PET), got {tuple(x.shape)}"
            )
        divisor = self.size_divisor
        for axis, size in (("height", x.shape[2]), ("width", x.shape[3])):
            if size % divisor != 0:
                raise ValueError(
                    f"input {axis} {size} is not divisible by 2**depth = {divisor} "
                    f"(depth={self.depth}); pad or resize to a multiple of {divisor}"
                )


class CoLearnNet(SegmentationNet):
    """The co-learning CNN of Fig. 1: two encoders, co-learning units, reconstruction.

    For each encoder scale ``k = 1 .. depth`` a :class:`CoLearningUnit` derives the fusion map
    ``(N, 2c, H/2**k, W/2**k)`` from the pooled CT and PET features of that scale and the fused
    map is ``fusion_map * cat([CT, PET])`` (Eq. 2-4). The reconstruction takes the deepest fused
    map, and each later block the fused map of its scale stacked with the previous block's
    output (Sec. III-E); the 1x1 output conv gives the logits.

    Shapes: ``x (N, 2, H, W) -> logits (N, num_classes, H, W)``; with
    ``return_fusion_maps=True``, ``(logits, [fusion maps, finest (1/2) first])``.

    Parameters
    ----------
    width, depth, num_classes, kernel_size, negative_slope
        See :class:`SegmentationNet`.
    fusion_kernel_size
        In-plane size ``k`` of the co-learning 3D kernel ``k x k x 2`` (3).
    """

    def __init__(
        self,
        width: int = 64,
        depth: int = 4,
        num_classes: int = 4,
        kernel_size: int = 3,
        fusion_kernel_size: int = 3,
        negative_slope: float = 0.1,
        variant: Variant = VARIANTS["paper"],
    ):
        super().__init__(width, depth, num_classes, kernel_size, negative_slope, variant)
        self.fusion_kernel_size = int(fusion_kernel_size)
        conv = self.conv_settings
        self.ct_encoder = Encoder(1, self.width, self.depth, conv)
        self.pet_encoder = Encoder(1, self.width, self.depth, conv)
        fusion_conv = replace(conv, kernel_size=self.fusion_kernel_size, negative_slope=self.fusion_negative_slope)
        self.colearn_units = nn.ModuleList(
            CoLearningUnit(self.width, fusion_conv) for _ in range(self.depth)
        )
        fused_channels = 2 * self.width
        self.reconstruction = Reconstruction(
            fused_channels, fused_channels if self.depth > 1 else 0, self.width, self.depth, conv
        )
        init_weights(self, conv.negative_slope)

    def forward(
        self, x: torch.Tensor, return_fusion_maps: bool = False
    ) -> torch.Tensor | tuple[torch.Tensor, list[torch.Tensor]]:
        """Logits ``(N, num_classes, H, W)``; optionally also the fusion maps, finest first."""
        self.check_input(x)
        ct_features = self.ct_encoder(x[:, 0:1])
        pet_features = self.pet_encoder(x[:, 1:2])
        fusion_maps: list[torch.Tensor] = []
        fused: list[torch.Tensor] = []
        for unit, ct, pet in zip(self.colearn_units, ct_features, pet_features, strict=True):
            fusion_map = unit(ct, pet)
            fusion_maps.append(fusion_map)
            fused.append(unit.fuse(fusion_map, ct, pet))
        logits = self.head(self.reconstruction(fused[-1], fused[:-1]))
        if return_fusion_maps:
            return logits, fusion_maps
        return logits


class _Baseline(SegmentationNet):
    """Common base of the TB / TC / FS baselines: their encoders, then one reconstruction.

    Parameters
    ----------
    width, depth, num_classes, kernel_size, negative_slope
        See :class:`SegmentationNet`.
    baseline_skips
        Give the reconstruction per-scale skip inputs (default False, as the authors' code:
        the reconstruction sees only the deepest encoder output; see the module docstring).

    A subclass builds its encoders in :meth:`_build_encoders` (returning the channels of the
    features it hands to the reconstruction) and maps ``x`` to those features in :meth:`features`.
    """

    def __init__(self, width: int = 64, depth: int = 4, num_classes: int = 4, kernel_size: int = 3,
                 negative_slope: float = 0.1, baseline_skips: bool = False, variant: Variant = VARIANTS["paper"]):
        super().__init__(width, depth, num_classes, kernel_size, negative_slope, variant)
        feature_channels = self._build_encoders()
        self.baseline_skips = bool(baseline_skips)
        skip_channels = feature_channels if (self.baseline_skips and self.depth > 1) else 0
        self.reconstruction = Reconstruction(
            feature_channels, skip_channels, self.width, self.depth, self.conv_settings
        )
        init_weights(self, self.conv_settings.negative_slope)

    def _build_encoders(self) -> int:
        raise NotImplementedError

    def features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Per-scale features, finest first, each ``(N, feature_channels, H/2**(k+1), W/2**(k+1))``."""
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``(N, num_classes, H, W)``."""
        self.check_input(x)
        features = self.features(x)
        skips = features[:-1] if self.reconstruction.skip_channels else []
        return self.head(self.reconstruction(features[-1], skips))


class TwoBranchNet(_Baseline):
    """TB baseline: two modality encoders, no co-learning, late fusion by concatenation.

    The deepest CT and PET features are concatenated, ``(N, 2c, H/2**depth, W/2**depth)``, and
    reconstructed; with ``baseline_skips=True`` each later reconstruction block also gets
    ``cat([CT, PET])`` of its scale (the co-learning net with fusion maps fixed to 1).
    Arguments: see :class:`_Baseline`.

    Shapes: ``x (N, 2, H, W) -> logits (N, num_classes, H, W)``.
    """

    def _build_encoders(self) -> int:
        self.ct_encoder = Encoder(1, self.width, self.depth, self.conv_settings)
        self.pet_encoder = Encoder(1, self.width, self.depth, self.conv_settings)
        return 2 * self.width

    def features(self, x: torch.Tensor) -> list[torch.Tensor]:
        ct_features = self.ct_encoder(x[:, 0:1])
        pet_features = self.pet_encoder(x[:, 1:2])
        return [torch.cat([ct, pet], dim=1) for ct, pet in zip(ct_features, pet_features, strict=True)]


class TwoChannelNet(_Baseline):
    """TC baseline: one encoder whose first conv takes CT and PET as two channels (early fusion).

    Arguments: see :class:`_Baseline`. Shapes: ``x (N, 2, H, W) -> logits (N, num_classes, H, W)``.
    """

    def _build_encoders(self) -> int:
        self.encoder = Encoder(NUM_INPUT_CHANNELS, self.width, self.depth, self.conv_settings)
        return self.width

    def features(self, x: torch.Tensor) -> list[torch.Tensor]:
        return self.encoder(x)


class FusedInputNet(_Baseline):
    """FS baseline: one encoder on the pixel-intermixed image made inside by :class:`PixelIntermix`.

    Every net takes the same ``(N, 2, H, W)`` input; this one blends it into ``(N, 1, H, W)``
    first (``w * std(CT) + (1 - w) * std(PET)``, standardised again, per slice).

    Shapes: ``x (N, 2, H, W) -> logits (N, num_classes, H, W)``.

    Parameters
    ----------
    fs_blend_weight
        CT weight ``w`` of the blend (0.5: the authors' equal-weight sum).
    **baseline_arguments
        See :class:`_Baseline`.
    """

    def __init__(self, width: int = 64, depth: int = 4, num_classes: int = 4, kernel_size: int = 3,
                 negative_slope: float = 0.1, fs_blend_weight: float = 0.5, baseline_skips: bool = False,
                 variant: Variant = VARIANTS["paper"]):
        self._fs_blend_weight = float(fs_blend_weight)
        super().__init__(width, depth, num_classes, kernel_size, negative_slope, baseline_skips, variant)

    def _build_encoders(self) -> int:
        self.intermix = PixelIntermix(self._fs_blend_weight)
        self.encoder = Encoder(1, self.width, self.depth, self.conv_settings)
        return self.width

    def features(self, x: torch.Tensor) -> list[torch.Tensor]:
        return self.encoder(self.intermix(x))


class TwoBranchSkipNet(TwoBranchNet):
    """``tb_skips``: TB whose reconstruction always gets ``cat([CT, PET])`` of every scale.

    The co-learning net with every fusion map fixed to 1 (Eq. 4 with ``F = 1``).
    Shapes: ``x (N, 2, H, W) -> logits (N, num_classes, H, W)``.

    Parameters
    ----------
    width, depth, num_classes, kernel_size, negative_slope
        See :class:`SegmentationNet`.
    """

    def __init__(self, width: int = 64, depth: int = 4, num_classes: int = 4, kernel_size: int = 3,
                 negative_slope: float = 0.1, variant: Variant = VARIANTS["paper"]):
        super().__init__(width, depth, num_classes, kernel_size, negative_slope, baseline_skips=True, variant=variant)


class TwoBranchAdditiveNet(SegmentationNet):
    """``tb_skips_conv``: the capacity-matched control of the co-learning net.

    Same encoders, co-learning units and reconstruction as :class:`CoLearnNet` (so the same
    parameter count), but each scale's unit output is *added* to the concatenated features,
    ``cat([CT, PET]) + unit(CT, PET)``, instead of multiplying them (Eq. 4). A win of the
    co-learning net over this one is credited to the multiplicative gating, not to capacity.

    Shapes: ``x (N, 2, H, W) -> logits (N, num_classes, H, W)``.

    Parameters
    ----------
    width, depth, num_classes, kernel_size, negative_slope
        See :class:`SegmentationNet`.
    fusion_kernel_size
        In-plane size of the unit's 3D kernel (as :class:`CoLearnNet`).
    """

    def __init__(self, width: int = 64, depth: int = 4, num_classes: int = 4, kernel_size: int = 3,
                 fusion_kernel_size: int = 3, negative_slope: float = 0.1, variant: Variant = VARIANTS["paper"]):
        super().__init__(width, depth, num_classes, kernel_size, negative_slope, variant)
        conv = self.conv_settings
        self.ct_encoder = Encoder(1, self.width, self.depth, conv)
        self.pet_encoder = Encoder(1, self.width, self.depth, conv)
        fusion_conv = replace(conv, kernel_size=int(fusion_kernel_size), negative_slope=self.fusion_negative_slope)
        self.fusion_units = nn.ModuleList(
            CoLearningUnit(self.width, fusion_conv) for _ in range(self.depth)
        )
        fused_channels = 2 * self.width
        self.reconstruction = Reconstruction(
            fused_channels, fused_channels if self.depth > 1 else 0, self.width, self.depth, conv
        )
        init_weights(self, conv.negative_slope)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``(N, num_classes, H, W)``."""
        self.check_input(x)
        ct_features = self.ct_encoder(x[:, 0:1])
        pet_features = self.pet_encoder(x[:, 1:2])
        fused = [
            torch.cat([ct, pet], dim=1) + unit(ct, pet)
            for unit, ct, pet in zip(self.fusion_units, ct_features, pet_features, strict=True)
        ]
        return self.head(self.reconstruction(fused[-1], fused[:-1]))


_NETS: dict[str, tuple[type[SegmentationNet], tuple[str, ...]]] = {
    "colearn": (CoLearnNet, ("width", "depth", "num_classes", "kernel_size", "fusion_kernel_size", "negative_slope")),
    "tb": (TwoBranchNet, ("width", "depth", "num_classes", "kernel_size", "negative_slope", "baseline_skips")),
    "tc": (TwoChannelNet, ("width", "depth", "num_classes", "kernel_size", "negative_slope", "baseline_skips")),
    "fs": (
        FusedInputNet,
        ("width", "depth", "num_classes", "kernel_size", "negative_slope", "fs_blend_weight", "baseline_skips"),
    ),
    "tb_skips": (TwoBranchSkipNet, ("width", "depth", "num_classes", "kernel_size", "negative_slope")),
    "tb_skips_conv": (
        TwoBranchAdditiveNet,
        ("width", "depth", "num_classes", "kernel_size", "fusion_kernel_size", "negative_slope"),
    ),
}


def build_model(name: str, **kwargs: Any) -> SegmentationNet:
    """Build one of the four nets, or an ablation net (:data:`ABLATION_NAMES`), by name.

    Every net accepts every keyword of :data:`DEFAULTS`, so one parameter dictionary serves all
    four; a keyword a net does not use is accepted and ignored (``fusion_kernel_size`` for the
    baselines, ``fs_blend_weight`` for all but ``fs``, ``baseline_skips`` for ``colearn``).
    An unknown keyword raises :class:`TypeError`.

    Parameters
    ----------
    name
        One of :data:`MODEL_NAMES` (``"colearn"``, ``"tb"``, ``"tc"``, ``"fs"``) or
        :data:`ABLATION_NAMES` (``"tb_skips"``, ``"tb_skips_conv"``), case-insensitive.
    **kwargs
        ``width=64, depth=4, num_classes=4, kernel_size=3, fusion_kernel_size=3,
        negative_slope=0.1, fs_blend_weight=0.5, baseline_skips=False, variant="paper"`` and the
        variant's switches (:class:`Variant`; None takes the variant's value).

    Returns
    -------
    SegmentationNet
        The net, He-initialised, in training mode; ``x (N, 2, H, W) -> logits (N, C, H, W)``.
    """
    key = str(name).lower()
    if key not in _NETS:
        raise ValueError(f"unknown model name {name!r}; expected one of {MODEL_NAMES + ABLATION_NAMES}")
    unknown = sorted(set(kwargs) - set(DEFAULTS))
    if unknown:
        raise TypeError(f"build_model got unknown keyword(s) {unknown}; accepted: {sorted(DEFAULTS)}")
    cls, used = _NETS[key]
    params = {**DEFAULTS, **kwargs}
    variant = resolve_variant(params["variant"], **{f.name: params[f.name] for f in fields(Variant)})
    return cls(**{k: params[k] for k in used}, variant=variant)


def count_parameters(model: nn.Module, trainable_only: bool = True) -> int:
    """Number of (trainable) parameters of ``model``; batch-norm running statistics excluded."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def predict_proba(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Softmax probability map (Eq. 5), ``(N, num_classes, H, W)``, from a net's logits.

    Runs the net as it is (call ``model.eval()`` first for inference); no gradient is kept.
    """
    with torch.no_grad():
        out = model(x)
        logits = out[0] if isinstance(out, tuple) else out
        return torch.softmax(logits.float(), dim=1)


def to_channels_last(model: nn.Module) -> nn.Module:
    """Put every 4D parameter and buffer of ``model`` in ``channels_last`` and every 5D one in
    ``channels_last_3d``, in place; returns ``model``.

    ``model.to(memory_format=torch.channels_last)`` fails on the co-learning unit's 5D
    :class:`torch.nn.Conv3d` kernel ("required rank 4 tensor"), hence this helper.
    """
    formats = {4: torch.channels_last, 5: torch.channels_last_3d}
    for tensor in list(model.parameters()) + list(model.buffers()):
        fmt = formats.get(tensor.dim())
        if fmt is not None:
            tensor.data = tensor.data.contiguous(memory_format=fmt)
    return model
