"""A fully connected network: flattened 32x32 image -> 300 -> 300 -> 300 -> classes."""
from torch import nn

from src.models.registry import register_model


@register_model("dense")
class Dense(nn.Module):
    """Three hidden layers of 300 ReLU units on the flattened ``n_channels`` x 32 x 32 input."""

    def __init__(self, n_classes: int = 10, n_channels: int = 3):
        super().__init__()
        self.flatten = nn.Flatten()
        self.fc1 = nn.Linear(n_channels * 32 * 32, 300)
        self.relu1 = nn.ReLU()
        self.fc2 = nn.Linear(300, 300)
        self.relu2 = nn.ReLU()
        self.fc3 = nn.Linear(300, 300)
        self.relu3 = nn.ReLU()
        self.fc4 = nn.Linear(300, n_classes)

    def forward(self, x):
        x = self.flatten(x)
        x = self.relu1(self.fc1(x))
        x = self.relu2(self.fc2(x))
        x = self.relu3(self.fc3(x))
        return self.fc4(x)
