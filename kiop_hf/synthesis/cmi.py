"""Contrastive model inversion (CMI): a generator per round, and a contrastive term that keeps the bank diverse."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..augment import random_resized_crop
from ..classifiers import FrozenClassifier
from .base import ADAM_BETAS, Synthesizer
from .generator import Generator, empty_generator


class CMISynthesizer(Synthesizer):
    """Contrastive model inversion (Fang et al., IJCAI 2021), the synthesizer of KiOP's research code.

    A generator is optimised with its latent batch each round; the method re-initialises it every round
    (``reset_generator=True``), while keeping it across rounds (only the latent batch is new) reaches good samples
    in far fewer steps per round. A contrastive term (``cr_weight``) makes each sample's local view recognise its
    own global view on projected per-layer feature means, against negatives from a memory bank of earlier rounds'
    samples, which keeps the data bank diverse.

    The negatives are drawn and projected once per round, without gradients, and every step of the round reuses
    their keys (MoCo's queue of keys): the research code re-projects all of them through the head with gradients at
    every step, which was 80% of a warm step's time at its own configuration (benchmarks/reference_speed.py).
    """

    def __init__(
        self,
        model: FrozenClassifier,
        *,
        latent_dim: int = 256,
        cr_weight: float = 0.8,
        cr_temperature: float = 0.6,
        memory_bank_size: int = 40_960,
        num_negatives: int = 4_096,
        head_dim: int = 256,
        head_lr: float = 1e-3,
        reset_generator: bool = True,
        **kwargs,
    ):
        super().__init__(model, **kwargs)
        self.latent_dim = latent_dim
        self.reset_generator = reset_generator
        self.generator: Generator | None = None
        self.weights["cr"] = cr_weight
        self.cr_temperature = cr_temperature
        self.num_negatives = num_negatives
        self.head_lr = head_lr
        feature_dim = self.statistics.feature_dim
        self.contrastive = cr_weight > 0 and feature_dim > 0
        if self.contrastive:
            device = model.mean.device
            self.head = ProjectionHead(feature_dim, min(feature_dim, 2048), head_dim).to(device)
            self.memory = MemoryBank(memory_bank_size, 2 * feature_dim)
        self._negative_keys: tuple[torch.Tensor, torch.Tensor] | None = None  # this round's, once projected

    @property
    def active_terms(self) -> list[str]:
        return [t for t in super().active_terms if t != "cr" or self.contrastive]

    def _start_round(self, device):
        channels, size, _ = self.image_shape
        if self.reset_generator or self.generator is None:
            self.generator = Generator(self.latent_dim, size, channels).to(device).train()
        self.z = torch.randn(self.batch_size, self.latent_dim, device=device, requires_grad=True)
        groups = [{"params": [*self.generator.parameters(), self.z], "lr": self.synthesis_lr}]
        if self.contrastive:
            groups.append({"params": self.head.parameters(), "lr": self.head_lr})
        return torch.optim.Adam(groups, betas=ADAM_BETAS)

    def _draw(self):
        return self.generator(self.z)

    def _local_features(self, images: torch.Tensor) -> torch.Tensor:
        self.statistics.clear()
        self.model(random_resized_crop(images, scale=(0.1, 0.5)))
        return self.statistics.features()

    def _method_losses(self, images, view):
        if not self.contrastive:
            return {}
        global_features = self.statistics.features()
        local_features = self._local_features(images)
        if self._negative_keys is None:
            self._negative_keys = self._project_negatives(global_features.device)
        loss = contrastive_loss(self.head, local_features, global_features, self._negative_keys, self.cr_temperature)
        return {"cr": loss}

    @torch.no_grad()
    def _project_negatives(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """This round's negatives as (local, global) keys of the current head: drawn and moved once per round."""
        local, global_ = self.memory.sample(self.num_negatives).to(device).chunk(2, dim=1)
        return self.head(local), self.head(global_)

    def _end_round(self, best):
        if not self.contrastive:
            return
        with torch.no_grad():
            self.statistics.clear()
            self.model(self._view(best))
            global_features = self.statistics.features()
            local_features = self._local_features(best)
        self.memory.add(torch.cat([local_features, global_features], dim=1))
        self._negative_keys = None  # the next round draws its negatives afresh, with the bank and head it has then
        self.statistics.clear()

    def state_dict(self):
        state = {}
        if self.contrastive:
            state |= {"head": self.head.state_dict(), "memory": self.memory.state_dict()}
        if not self.reset_generator and self.generator is not None:
            state["generator"] = self.generator.state_dict()
        return state

    def load_state_dict(self, state):
        if self.contrastive:
            self.head.load_state_dict(state["head"])
            self.memory.load_state_dict(state["memory"])
            self._negative_keys = None
        if "generator" in state:
            channels, size, _ = self.image_shape
            self.generator = empty_generator(self.latent_dim, size, channels, self.model.mean.device)
            self.generator.load_state_dict(state["generator"])


class ProjectionHead(nn.Module):
    """Two-layer MLP onto the unit sphere, where CMI's instance discrimination happens."""

    def __init__(self, in_dim: int, hidden_dim: int, out_dim: int = 256):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(in_dim, hidden_dim), nn.ReLU(inplace=True), nn.Linear(hidden_dim, out_dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.net(x), dim=1)


class MemoryBank:
    """A fixed-size ring buffer of earlier samples' (local, global) features: the contrastive term's negatives."""

    def __init__(self, size: int, dim: int):
        self.features = torch.zeros(size, dim)
        self.count = 0  # rows written so far (the buffer is full once count >= size)

    def add(self, features: torch.Tensor) -> None:
        features = features.detach().to(self.features)[-len(self.features) :]
        rows = (self.count + torch.arange(len(features))) % len(self.features)
        self.features[rows] = features
        self.count += len(features)

    def sample(self, n: int) -> torch.Tensor:
        filled = min(self.count, len(self.features))
        if filled == 0:
            return self.features[:0]
        return self.features[torch.randperm(filled)[:n]]

    def state_dict(self) -> dict:
        return {"features": self.features.clone(), "count": self.count}

    def load_state_dict(self, state: dict) -> None:
        self.features, self.count = state["features"].clone(), int(state["count"])


def contrastive_loss(
    head: ProjectionHead,
    local: torch.Tensor,
    global_: torch.Tensor,
    negative_keys: tuple[torch.Tensor, torch.Tensor],
    temperature: float,
) -> torch.Tensor:
    """Instance discrimination: each sample's local view must pick its own global view among the batch's global
    views and the negatives' keys, and each global view its own local view among the batch's local views and the
    negatives' local keys.

    The loss is symmetric (local -> global and global -> local, averaged), as in CMI: the one-way form would let the
    head separate the local views alone while the global views crowd together, and the global views are what the
    class and BN terms shape. Gradients flow through the batch's local projections only; the global projections
    and the negatives' keys are targets.
    """
    projected_local = head(local)
    with torch.no_grad():
        projected_global = head(global_)
    negative_local, negative_global = (keys.to(projected_local) for keys in negative_keys)
    to_global = projected_local @ torch.cat([projected_global, negative_global]).T / temperature
    to_local = projected_global @ torch.cat([projected_local, negative_local]).T / temperature
    labels = torch.arange(len(local), device=local.device)
    return 0.5 * (F.cross_entropy(to_global, labels) + F.cross_entropy(to_local, labels))
