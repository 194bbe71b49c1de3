"""A multi-layer perceptron on flattened images."""

import math

from torch import nn

from ginlab.config import check_ints, check_number
from ginlab.registry import register_model


@register_model("mlp")
class MLP(nn.Module):
    """Args: input_shape and num_classes (given by the data), hidden sizes, dropout."""

    def __init__(
        self, input_shape, num_classes: int, hidden: tuple[int, ...] = (128, 64), dropout: float = 0.1
    ):
        super().__init__()
        if hidden != ():  # no hidden layer: a linear model
            check_ints("mlp.hidden", hidden, minimum=1, example=(128, 64))
        check_number("mlp.dropout", dropout, 0, 1, example=0.1)
        layers, width = [nn.Flatten()], math.prod(input_shape)
        for h in hidden:
            layers += [nn.Linear(width, h), nn.ReLU(), nn.Dropout(dropout)]
            width = h
        layers.append(nn.Linear(width, num_classes))
        self.net = nn.Sequential(*layers)

    def forward(self, x):  # (B, C, H, W) -> (B, num_classes)
        return self.net(x)
