"""Layers shared by the search spaces: slimmable convolutions, per-width BatchNorm and the
candidate ops (ResConv, ResAtt, MBConv, SqueezeExcite)."""

from bossnas.layers.ops import (
    MBConv,
    MultiHeadSelfAttention,
    ResAtt,
    ResConv,
    SqueezeExcite,
    activation,
    attention_heads,
    make_divisible,
    make_shortcut,
    pool_down,
)
from bossnas.layers.slimmable import SlimConv2d, WidthBatchNorm2d, copy_bn_, copy_conv_

__all__ = [
    "MBConv",
    "MultiHeadSelfAttention",
    "ResAtt",
    "ResConv",
    "SlimConv2d",
    "SqueezeExcite",
    "WidthBatchNorm2d",
    "activation",
    "attention_heads",
    "copy_bn_",
    "copy_conv_",
    "make_divisible",
    "make_shortcut",
    "pool_down",
]
