"""LeNet-5 (LeCun et al. 1998), the MNIST / Fashion-MNIST member of the SMD, ADP and CLDL papers."""

from __future__ import annotations

from torch import nn

from .base import Member, activation, flat_size
from .registry import register_model


@register_model("lenet5")
def lenet5(num_classes: int, in_channels: int, image_size: int, activation_name: str, mean, std) -> Member:
    """conv5x5(6, pad 2) -> pool -> conv5x5(16) -> pool -> fc120 -> fc84 -> classes.

    Padding 2 on the first convolution makes 28x28 inputs give the classic 5x5x16 map. Stages: the two
    conv blocks, the flattening fc120, fc84 (penultimate, 84 features).
    """
    conv = [
        nn.Sequential(nn.Conv2d(in_channels, 6, 5, padding=2), activation(activation_name), nn.MaxPool2d(2)),
        nn.Sequential(nn.Conv2d(6, 16, 5), activation(activation_name), nn.MaxPool2d(2)),
    ]
    n = flat_size(conv, in_channels, image_size)
    stages = conv + [
        nn.Sequential(nn.Flatten(), nn.Linear(n, 120), activation(activation_name)),
        nn.Sequential(nn.Linear(120, 84), activation(activation_name)),
    ]
    return Member(stages, 84, num_classes, mean, std)
