"""Candidate operations shared by the search spaces: ResConv, ResAtt, MBConv, SqueezeExcite.

Each op is a plain ``nn.Module`` built from its input / output channels and stride, so the
standalone networks and the weight-sharing supernets are made of the same modules (a
supernet copies a candidate's ``state_dict`` straight into the standalone op).

>>> ResConv(64, 256)(torch.zeros(2, 64, 8, 8)).shape
torch.Size([2, 256, 8, 8])
>>> ResAtt(256, 512, stride=2)(torch.zeros(2, 256, 8, 8)).shape
torch.Size([2, 512, 4, 4])
"""

from __future__ import annotations

from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

#: activations an op can be asked for by name (configs and named models use the names)
ACTIVATIONS: dict[str, type[nn.Module]] = {"relu": nn.ReLU, "silu": nn.SiLU, "swish": nn.SiLU}
#: ResNet bottleneck expansion: a bottleneck's inner width is a quarter of its output
BOTTLENECK_EXPANSION = 4
#: channels per attention head (BoTNet and BossNet use 64)
HEAD_DIM = 64
#: squeeze-excite reduction inside ResNet bottlenecks (timm's SE-ResNet / BossNet: 1/16)
RESNET_SE_RATIO = 1 / 16


def make_divisible(value: float, divisor: int = 8, min_value: int | None = None) -> int:
    """Round a channel count to a multiple of ``divisor`` without dropping more than 10%.

    The rounding of MobileNet / EfficientNet, so that scaled widths stay hardware friendly.
    >>> make_divisible(256 * 0.3)
    80
    """
    min_value = divisor if min_value is None else min_value
    rounded = max(min_value, int(value + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * value:
        rounded += divisor
    return rounded


def activation(name: str) -> nn.Module:
    """A fresh activation module by name (``relu``, ``silu`` / ``swish``)."""
    return ACTIVATIONS[name]()


def pool_down(factor: int) -> nn.Module:
    """Average pooling by ``factor`` that rounds odd sides up (like a padded stride-2 conv).

    Every down-sampling route of the spaces maps a side ``n`` to ``ceil(n / factor)``, so the
    routes of a fabric agree on the output size at any input size.
    """
    if factor == 1:
        return nn.Identity()
    return nn.AvgPool2d(factor, factor, ceil_mode=True, count_include_pad=False)


def make_shortcut(c_in: int, c_out: int, stride: int, avg_down: bool) -> nn.Module:
    """The residual branch of a bottleneck: identity, or a projection when shape changes.

    ``avg_down`` (ResNet-D, used by BossNet): average-pool then a 1x1 conv + BN, so no input
    pixel is skipped; otherwise the classic strided 1x1 conv + BN.
    """
    if stride == 1 and c_in == c_out:
        return nn.Identity()
    if avg_down:
        return nn.Sequential(pool_down(stride), nn.Conv2d(c_in, c_out, 1, bias=False), nn.BatchNorm2d(c_out))
    return nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False), nn.BatchNorm2d(c_out))


def conv_shortcut(c_in: int, c_out: int, stride: int, act: str = "relu") -> nn.Module:
    """The shortcut of the official HyTra search supernet (not of the retrained BossNet).

    3x3 stride-2 conv + BN + activation where the branch down-samples, 1x1 conv + BN +
    activation where only the width changes, identity otherwise. Kept so that a search can
    rate paths with the supernet the official ratings came from (``search_shortcut=official``).
    """
    if stride == 1 and c_in == c_out:
        return nn.Identity()
    conv = (nn.Conv2d(c_in, c_out, 1, bias=False) if stride == 1
            else nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False))
    return nn.Sequential(conv, nn.BatchNorm2d(c_out), activation(act))


class SqueezeExcite(nn.Module):
    """Channel gating (Hu et al., 2018): global pool, 1x1 reduce, activation, 1x1 expand, sigmoid."""

    def __init__(self, channels: int, reduced: int, act: str = "relu"):
        super().__init__()
        self.reduce = nn.Conv2d(channels, reduced, 1)
        self.act = activation(act)
        self.expand = nn.Conv2d(reduced, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate = self.expand(self.act(self.reduce(x.mean((2, 3), keepdim=True))))
        return x * torch.sigmoid(gate)


class ResConv(nn.Module):
    """ResNet bottleneck: 1x1 reduce, 3x3, 1x1 expand (each with BN), optional SE, residual.

    ``pos_conv`` puts a depthwise 3x3 conv right after the first 1x1 conv, carrying the
    stride, as the official BossNet code does in every block (it is cheap and gives conv and
    attention layers the same input stage). ``act`` is ``relu`` or ``silu`` (BossNet-T0).
    The last BN's scale starts at zero, so a fresh block is the identity on its shortcut.
    """

    #: sub-modules whose shapes do not depend on the input (shared by a supernet's routes)
    body: ClassVar[tuple[str, ...]] = ("conv2", "bn2", "conv3", "bn3", "se")

    def __init__(self, c_in: int, c_out: int, stride: int = 1, act: str = "relu", se: bool = False,
                 avg_down: bool = False, pos_conv: bool = True, shortcut: nn.Module | None = None):
        super().__init__()
        mid = max(1, c_out // BOTTLENECK_EXPANSION)
        # ``shortcut`` replaces the default projection (the HyTra search supernet's own form)
        self.shortcut = shortcut if shortcut is not None else make_shortcut(c_in, c_out, stride, avg_down)
        self.conv1 = nn.Conv2d(c_in, mid, 1, bias=False)
        self.pos = nn.Conv2d(mid, mid, 3, stride=stride, padding=1, groups=mid) if pos_conv else nn.Identity()
        self.bn1 = nn.BatchNorm2d(mid)
        self.act1 = activation(act)
        self.conv2 = nn.Conv2d(mid, mid, 3, stride=1 if pos_conv else stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(mid)
        self.act2 = activation(act)
        self.conv3 = nn.Conv2d(mid, c_out, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(c_out)
        nn.init.zeros_(self.bn3.weight)
        self.se = SqueezeExcite(c_out, make_divisible(c_out * RESNET_SE_RATIO)) if se else nn.Identity()
        self.act3 = activation(act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = self.shortcut(x)
        x = self.act1(self.bn1(self.pos(self.conv1(x))))
        x = self.act2(self.bn2(self.conv2(x)))
        x = self.se(self.bn3(self.conv3(x)))
        return self.act3(x + shortcut)


#: ``standard``: softmax(q k^T / sqrt(d)) v, every position a weighted mean of the values;
#: ``official-search``: the official HyTra search op, ``v @ softmax(q^T k)`` without the transpose
#: (output position j sums the values of all i weighted by softmax_j(q_i . k_j))
ATTENTION_FORMS = ("standard", "official-search")


class MultiHeadSelfAttention(nn.Module):
    """Global multi-head self-attention over the positions of a feature map (no positional bias).

    q, k and v come from one 1x1 conv; ``scaled_dot_product_attention`` does the rest, so
    fused kernels are used where the device has them. ``form="official-search"`` reproduces
    the official search supernet's op (see :data:`ATTENTION_FORMS`); the retrained BossNets
    and every standalone network use ``standard``.
    """

    def __init__(self, dim: int, heads: int, form: str = "standard"):
        super().__init__()
        if dim % heads:
            raise ValueError(f"attention width {dim} is not divisible by {heads} heads")
        if form not in ATTENTION_FORMS:
            raise ValueError(f"unknown attention form {form!r}; expected one of {ATTENTION_FORMS}")
        self.heads = heads
        self.form = form
        self.qkv = nn.Conv2d(dim, 3 * dim, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        qkv = self.qkv(x).reshape(b, 3, self.heads, c // self.heads, h * w).transpose(-2, -1)
        q, k, v = qkv[:, 0], qkv[:, 1], qkv[:, 2]  # [b, heads, hw, d]
        if self.form == "standard":
            out = F.scaled_dot_product_attention(q, k, v)
        else:
            weights = torch.softmax(q @ k.transpose(-2, -1) * q.shape[-1] ** -0.5, dim=-1)  # [b, heads, i, j]
            out = weights.transpose(-2, -1) @ v  # sums over the query index i, not the key index j
        return out.transpose(-2, -1).reshape(b, c, h, w)


def attention_heads(width: int) -> int:
    """Heads of 64 channels (BoTNet); narrower layers (scaled-down spaces) get fewer heads,
    down to one head of ``width`` channels, so attention exists at every width.

    >>> attention_heads(512), attention_heads(96), attention_heads(16)
    (8, 1, 1)
    """
    heads = max(1, width // HEAD_DIM)
    while width % heads:
        heads -= 1
    return heads


class ResAtt(nn.Module):
    """BoTNet-style bottleneck whose 3x3 conv is multi-head self-attention over all positions.

    1x1 conv, depthwise 3x3 conv (position encoding, carries the stride), BN, activation,
    self-attention (heads of 64 channels), BN, activation, 1x1 expand, BN, residual.
    """

    body: ClassVar[tuple[str, ...]] = ("attn", "bn_attn", "conv_out", "bn_out")

    def __init__(self, c_in: int, c_out: int, stride: int = 1, act: str = "relu",
                 avg_down: bool = False, heads: int | None = None, shortcut: nn.Module | None = None,
                 attention: str = "standard"):
        super().__init__()
        mid = max(1, c_out // BOTTLENECK_EXPANSION)
        self.shortcut = shortcut if shortcut is not None else make_shortcut(c_in, c_out, stride, avg_down)
        self.conv_in = nn.Conv2d(c_in, mid, 1, bias=False)
        self.pos = nn.Conv2d(mid, mid, 3, stride=stride, padding=1, groups=mid)
        self.bn_in = nn.BatchNorm2d(mid)
        self.act_in = activation(act)
        self.attn = MultiHeadSelfAttention(mid, heads or attention_heads(mid), attention)
        self.bn_attn = nn.BatchNorm2d(mid)
        self.act_attn = activation(act)
        self.conv_out = nn.Conv2d(mid, c_out, 1, bias=False)
        self.bn_out = nn.BatchNorm2d(c_out)
        nn.init.zeros_(self.bn_out.weight)
        self.act_out = activation(act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = self.shortcut(x)
        x = self.act_in(self.bn_in(self.pos(self.conv_in(x))))
        x = self.act_attn(self.bn_attn(self.attn(x)))
        x = self.bn_out(self.conv_out(x))
        return self.act_out(x + shortcut)


class MBConv(nn.Module):
    """Inverted residual (MobileNetV2 / EfficientNet): 1x1 expand, depthwise kxk, SE, 1x1 project.

    SE reduces to ``se_ratio`` of the *input* channels, as in EfficientNet; Swish (SiLU)
    everywhere; residual when the shape is kept. ``expand=1`` drops the expansion conv.
    ``shortcut`` (a module mapping the input to the output's shape, e.g. :func:`mbconv_shortcut`)
    keeps a residual on a layer that changes stride or width, as the official BossNAS MBConv
    supernet does; without it such a layer has none (EfficientNet). It is ignored where the
    shape is kept (the identity residual), and may be shared by several candidates of a layer.
    """

    def __init__(self, c_in: int, c_out: int, expand: int, kernel: int, stride: int = 1,
                 se_ratio: float = 0.25, act: str = "silu", shortcut: nn.Module | None = None):
        super().__init__()
        hidden = c_in * expand
        self.residual = stride == 1 and c_in == c_out
        # None registers no module: the layers without a shortcut keep their state-dict keys
        self.shortcut: nn.Module | None = None if self.residual else shortcut
        self.expand: nn.Module = (
            nn.Identity() if expand == 1
            else nn.Sequential(nn.Conv2d(c_in, hidden, 1, bias=False), nn.BatchNorm2d(hidden), activation(act))
        )
        self.depthwise = nn.Sequential(
            nn.Conv2d(hidden, hidden, kernel, stride=stride, padding=kernel // 2, groups=hidden, bias=False),
            nn.BatchNorm2d(hidden),
            activation(act),
        )
        self.se = SqueezeExcite(hidden, max(1, int(c_in * se_ratio)), act) if se_ratio > 0 else nn.Identity()
        self.project = nn.Sequential(nn.Conv2d(hidden, c_out, 1, bias=False), nn.BatchNorm2d(c_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.project(self.se(self.depthwise(self.expand(x))))
        if self.residual:
            return out + x
        return out + self.shortcut(x) if self.shortcut is not None else out


def mbconv_shortcut(c_in: int, c_out: int, stride: int) -> nn.Module:
    """The residual branch of the official BossNAS MBConv layers that change shape: a 2x2
    average pool (stride 2, ceil mode, so odd sides match the depthwise conv's output) where
    the layer strides, then a 1x1 conv + BN where it changes width."""
    parts: list[nn.Module] = [pool_down(stride)] if stride > 1 else []
    if c_in != c_out:
        parts += [nn.Conv2d(c_in, c_out, 1, bias=False), nn.BatchNorm2d(c_out)]
    return nn.Sequential(*parts)
