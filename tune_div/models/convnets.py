"""Conv3 and Conv4 of the GAL paper (Kariyappa & Qureshi 2019, Table 1): 3x3 convolutions, 2x2 pooling.

Conv3: C32 C64 M C128 M FC1024 FC10.   Conv4: C32 C64 C128 M C128 M FC1024 FC10.
"""

from __future__ import annotations

from torch import nn

from .base import Member, activation, flat_size
from .registry import register_model


def _conv_net(plan: list, num_classes, in_channels, image_size, activation_name, mean, std) -> Member:
    stages: list[nn.Module] = []
    block: list[nn.Module] = []
    c = in_channels
    for item in plan:
        if item == "M":
            block.append(nn.MaxPool2d(2))
            stages.append(nn.Sequential(*block))
            block = []
        else:
            block += [nn.Conv2d(c, item, 3, padding=1), activation(activation_name)]
            c = item
    if block:
        stages.append(nn.Sequential(*block))
    n = flat_size(stages, in_channels, image_size)
    stages.append(nn.Sequential(nn.Flatten(), nn.Linear(n, 1024), activation(activation_name)))
    return Member(stages, 1024, num_classes, mean, std)


@register_model("conv3")
def conv3(num_classes, in_channels, image_size, activation_name, mean, std) -> Member:
    return _conv_net([32, 64, "M", 128, "M"], num_classes, in_channels, image_size, activation_name, mean, std)


@register_model("conv4")
def conv4(num_classes, in_channels, image_size, activation_name, mean, std) -> Member:
    return _conv_net([32, 64, 128, "M", 128, "M"], num_classes, in_channels, image_size, activation_name, mean, std)
