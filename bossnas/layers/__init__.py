"""Layers shared by the search spaces (slimmable convolutions, per-width BatchNorm, ...)."""

from bossnas.layers.slimmable import SlimConv2d, WidthBatchNorm2d, copy_bn_, copy_conv_

__all__ = ["SlimConv2d", "WidthBatchNorm2d", "copy_bn_", "copy_conv_"]
