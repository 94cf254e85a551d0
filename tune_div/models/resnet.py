"""CIFAR ResNets of He et al. 2016 (Sec. 4.2): 6n+2 layers, 3 stages of n basic blocks, 16/32/64 channels.

resnet20: n=3 (SMD, GAL, ADP, CLDL papers); resnet26: n=4 (GAL's MIX ensemble). Shortcuts that change
shape use a 1x1 convolution with batch norm (option B).
"""

from __future__ import annotations

from torch import nn

from .base import Member, activation
from .fused import GROUPED, Act, fused_op, run_module, to_grouped
from .registry import register_model


class BasicBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, stride: int, activation_name: str):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.act1 = activation(activation_name)
        self.act2 = activation(activation_name)
        self.shortcut = nn.Sequential()
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out))

    def forward(self, x):
        out = self.act1(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.act2(out + self.shortcut(x))


@fused_op(BasicBlock)
def _fused_basic_block(mods, h, ctx):
    """The block of every member at once (models/fused.py), in the order of ``BasicBlock.forward``."""

    def sub(name, a):
        return run_module([getattr(m, name) for m in mods], a, ctx)

    out = sub("bn2", sub("conv2", sub("act1", sub("bn1", sub("conv1", h)))))
    short = sub("shortcut", h) if len(mods[0].shortcut) else h
    return sub("act2", Act(out.value + to_grouped(short, ctx).value, GROUPED))


def _resnet(n: int, num_classes, in_channels, activation_name, mean, std) -> Member:
    stem = nn.Sequential(
        nn.Conv2d(in_channels, 16, 3, 1, 1, bias=False), nn.BatchNorm2d(16), activation(activation_name)
    )
    stages: list[nn.Module] = [stem]
    c = 16
    for i, width in enumerate((16, 32, 64)):
        blocks = []
        for j in range(n):
            blocks.append(BasicBlock(c, width, 2 if (i > 0 and j == 0) else 1, activation_name))
            c = width
        stages.append(nn.Sequential(*blocks))
    stages.append(nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten()))
    return Member(stages, 64, num_classes, mean, std)


@register_model("resnet20")
def resnet20(num_classes, in_channels, image_size, activation_name, mean, std) -> Member:
    return _resnet(3, num_classes, in_channels, activation_name, mean, std)


@register_model("resnet26")
def resnet26(num_classes, in_channels, image_size, activation_name, mean, std) -> Member:
    return _resnet(4, num_classes, in_channels, activation_name, mean, std)
