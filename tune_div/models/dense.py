"""The two small MNIST models of the D-ReLU paper (Sooksatra et al.): ``dense`` and ``shallow_cnn``.

The paper names them ("a two-hidden-layer dense network", "a shallow convolutional network") without
their widths; the widths below are ours: dense 512-256, shallow CNN conv32-conv64 (3x3, pooled) + fc128.
"""

from __future__ import annotations

from torch import nn

from .base import Member, activation, flat_size
from .registry import register_model


@register_model("dense")
def dense(num_classes, in_channels, image_size, activation_name, mean, std) -> Member:
    n = in_channels * image_size * image_size
    stages = [
        nn.Sequential(nn.Flatten(), nn.Linear(n, 512), activation(activation_name)),
        nn.Sequential(nn.Linear(512, 256), activation(activation_name)),
    ]
    return Member(stages, 256, num_classes, mean, std)


@register_model("shallow_cnn")
def shallow_cnn(num_classes, in_channels, image_size, activation_name, mean, std) -> Member:
    conv = [
        nn.Sequential(nn.Conv2d(in_channels, 32, 3, padding=1), activation(activation_name), nn.MaxPool2d(2)),
        nn.Sequential(nn.Conv2d(32, 64, 3, padding=1), activation(activation_name), nn.MaxPool2d(2)),
    ]
    n = flat_size(conv, in_channels, image_size)
    stages = conv + [nn.Sequential(nn.Flatten(), nn.Linear(n, 128), activation(activation_name))]
    return Member(stages, 128, num_classes, mean, std)
