"""Constants and a plain-module classifier shared by the tests."""

from torch import nn

GRAY_MEAN, GRAY_STD = [0.3], [0.25]
RGB_MEAN, RGB_STD = [0.4, 0.5, 0.6], [0.2, 0.25, 0.3]
# The smallest schedule that runs every part of a round (synthesis, bank, knowledge storing) on the CPU.
TINY_TRAINING = dict(
    rounds=1,
    synthesis_steps=2,
    kd_steps=2,
    batch_size=4,
    memory_bank_size=16,
    num_negatives=4,
    head_dim=8,
    use_cpu=True,
)


class TinyCNN(nn.Module):
    """A plain nn.Module classifier with BatchNorm, as users bring their own."""

    def __init__(self, in_channels=3, num_classes=40):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, 8, 3, padding=1),
            nn.BatchNorm2d(8),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
        )
        self.head = nn.Linear(8, num_classes)

    def forward(self, x):
        return self.head(self.features(x))
