"""LeNet-5 with ReLU and max pooling, for 32x32 inputs."""
from torch import nn

from src.models.registry import register_model


@register_model("lenet")
class LeNet(nn.Module):
    """Two 5x5 conv + ReLU + 2x2 max-pool stages, then three fully connected layers (400-120-84-classes)."""

    def __init__(self, n_classes: int = 10, n_channels: int = 3):
        super().__init__()
        self.conv1 = nn.Conv2d(n_channels, 6, kernel_size=5)
        self.relu1 = nn.ReLU()
        self.pool1 = nn.MaxPool2d(2)
        self.conv2 = nn.Conv2d(6, 16, kernel_size=5)
        self.relu2 = nn.ReLU()
        self.pool2 = nn.MaxPool2d(2)
        self.flatten = nn.Flatten()
        self.fc1 = nn.Linear(16 * 5 * 5, 120)
        self.relu3 = nn.ReLU()
        self.fc2 = nn.Linear(120, 84)
        self.relu4 = nn.ReLU()
        self.fc3 = nn.Linear(84, n_classes)

    def forward(self, x):
        x = self.pool1(self.relu1(self.conv1(x)))
        x = self.pool2(self.relu2(self.conv2(x)))
        x = self.flatten(x)
        x = self.relu3(self.fc1(x))
        x = self.relu4(self.fc2(x))
        return self.fc3(x)
