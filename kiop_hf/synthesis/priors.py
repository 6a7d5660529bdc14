"""What an inverted model itself tells about its training data: the inputs of its normalisation layers."""

from __future__ import annotations

import torch
from torch import nn


class NormLayerInputs:
    """Records the inputs of a frozen model's normalisation layers, while used as a context manager.

    After a forward pass inside ``with statistics:``, ``loss()`` is the DeepInversion prior (distance of the batch
    mean and variance of each BatchNorm layer's input to the layer's running statistics) and ``features()`` the
    per-sample means of the recorded inputs, concatenated over layers (the features CMI contrasts). A model
    without BatchNorm (a ViT, a CLIP image tower) has no prior; its LayerNorm / GroupNorm inputs still give the
    features. Outside the block no hook is attached, so the model's other users pay nothing and keep nothing.

    With ``momentum`` > 0 the prior compares the running statistics with a blend of the batch's statistics and a
    momentum average over earlier rounds' batches (FastDFKD's feature-statistics regulariser): a few adaptation
    steps on one small batch then cannot over-fit that batch's statistics. ``commit()`` folds the latest batch's
    statistics into the average, once per round.
    """

    def __init__(self, model: nn.Module, momentum: float = 0.0):
        self.model = model
        self.momentum = momentum
        self.averages: list[tuple[torch.Tensor, torch.Tensor]] = []  # per BatchNorm layer, once committed
        self._latest: list[tuple[torch.Tensor, torch.Tensor]] = []
        self.layers = [
            m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats
        ]
        self.feature_layers = self.layers or [
            m for m in model.modules() if isinstance(m, (nn.LayerNorm, nn.GroupNorm))
        ]
        self._inputs: list[tuple[nn.Module, torch.Tensor]] = []  # (layer, its input), in call order
        self._handles: list = []

    def __len__(self) -> int:
        return len(self.layers)

    def __enter__(self) -> NormLayerInputs:
        self._handles = [layer.register_forward_hook(self._record) for layer in self.feature_layers]
        return self

    def __exit__(self, *exc) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []
        self.clear()

    @property
    def feature_dim(self) -> int:
        return sum(_width(layer) for layer in self.feature_layers)

    def _record(self, module: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
        self._inputs.append((module, inputs[0]))

    def clear(self) -> None:
        self._inputs = []

    def loss(self) -> torch.Tensor:
        total, latest = 0.0, []
        for layer, x in self._inputs:
            if not isinstance(layer, nn.modules.batchnorm._BatchNorm):
                continue
            x = x.float()  # statistics in fp32 under mixed precision
            dims = [0, *range(2, x.ndim)]
            mean, var = x.mean(dim=dims), x.var(dim=dims, unbiased=False)
            latest.append((mean.detach(), var.detach()))
            if self.momentum > 0 and len(self.averages) == len(self.layers):
                average_mean, average_var = self.averages[len(latest) - 1]
                mean = (1 - self.momentum) * mean + self.momentum * average_mean
                var = (1 - self.momentum) * var + self.momentum * average_var
            total = total + torch.norm(mean - layer.running_mean, 2) + torch.norm(var - layer.running_var, 2)
        self._latest = latest
        return total

    def commit(self) -> None:
        """Fold the statistics of the latest ``loss()`` batch into the momentum averages."""
        if len(self._latest) != len(self.layers):
            return
        if len(self.averages) != len(self.layers):
            self.averages = list(self._latest)
        else:
            self.averages = [
                (self.momentum * m + (1 - self.momentum) * new_m, self.momentum * v + (1 - self.momentum) * new_v)
                for (m, v), (new_m, new_v) in zip(self.averages, self._latest)
            ]

    def state_dict(self) -> dict:
        return {f"{kind}_{i}": t for i, (m, v) in enumerate(self.averages) for kind, t in (("mean", m), ("var", v))}

    def load_state_dict(self, state: dict) -> None:
        self.averages = [(state[f"mean_{i}"], state[f"var_{i}"]) for i in range(len(state) // 2)]

    def features(self) -> torch.Tensor:
        return torch.cat([_per_sample_mean(layer, x.float()) for layer, x in self._inputs], dim=1)


def _width(layer: nn.Module) -> int:
    return (
        layer.normalized_shape[-1]
        if isinstance(layer, nn.LayerNorm)
        else getattr(layer, "num_features", None) or layer.num_channels
    )


def _per_sample_mean(layer: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Mean over positions: channels-last for a LayerNorm over tokens, channels-first otherwise (BatchNorm,
    GroupNorm, and the channels-first LayerNorm2d of ConvNeXt-style models)."""
    if x.ndim == 2:
        return x
    channels_last = isinstance(layer, nn.LayerNorm) and x.shape[-1] == _width(layer)
    return x.flatten(1, -2).mean(dim=1) if channels_last else x.flatten(2).mean(dim=2)
