"""A small CNN for 8x8 to 32x32 images: conv blocks, global average pooling, a linear head."""

from torch import nn

from ginlab.config import check_ints, check_number
from ginlab.registry import register_model


@register_model("cnn")
class CNN(nn.Module):
    """Args: input_shape and num_classes (given by the data); channels per block; dropout before the head.

    Each block is conv3x3-BN-ReLU, and every block after the first halves the resolution (max-pool), as
    long as the image stays at least 2x2; so the same model fits 8x8 digits and 28x28 MNIST.
    """

    def __init__(
        self, input_shape, num_classes: int, channels: tuple[int, ...] = (32, 64), dropout: float = 0.2
    ):
        super().__init__()
        check_ints("cnn.channels", channels, minimum=1, example=(32, 64))
        check_number("cnn.dropout", dropout, 0, 1, example=0.2)
        in_channels, size = input_shape[0], min(input_shape[1:])
        layers = []
        for i, c in enumerate(channels):
            if i > 0 and size >= 4:
                layers.append(nn.MaxPool2d(2))
                size //= 2
            layers += [nn.Conv2d(in_channels, c, 3, padding=1, bias=False), nn.BatchNorm2d(c), nn.ReLU()]
            in_channels = c
        self.features = nn.Sequential(*layers)
        self.head = nn.Sequential(
            nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(dropout), nn.Linear(in_channels, num_classes)
        )

    def forward(self, x):  # (B, C, H, W) -> (B, num_classes)
        return self.head(self.features(x))
