"""The data bank: the images of one model that knowledge storing samples from, kept where they are used."""

from __future__ import annotations

import torch

from ..pixels import to_unit_range


class DataBank:
    """The in-memory image set of one model: the synthetic batches of its rounds, or a real image set.

    The images stay on the device they arrive on, in a buffer that grows by doubling (or, with ``max_size``, a ring
    buffer whose newest images replace the oldest), so adding a round's batch or drawing a knowledge-storing batch
    never copies the bank between host and device. ``sample(n, recent_share=s)`` draws a share ``s`` of the batch
    from the newest added batch, the rest uniformly from the whole bank; images added with ``labels`` (a model's
    reading of them) can instead be drawn class-balanced (``balanced=True``), so that the classes a synthesizer
    over-produces do not crowd out the others.
    """

    def __init__(self, max_size: int | None = None):
        if max_size is not None and max_size < 1:
            raise ValueError(f"a data bank's max_size must be at least 1 (or None for no limit), got {max_size}")
        self.max_size = max_size
        self._buffer: torch.Tensor | None = None
        self._labels: torch.Tensor | None = None  # one class per kept image, where ``add`` was given them
        self.count = 0  # images added so far
        self.last_added = 0  # size of the newest batch

    def __len__(self) -> int:
        return 0 if self._buffer is None else min(self.count, len(self._buffer))

    @property
    def images(self) -> torch.Tensor | None:
        """The kept images, oldest first."""
        if self._buffer is None:
            return None
        if self.count <= len(self._buffer):
            return self._buffer[: self.count]
        start = self.count % len(self._buffer)
        return torch.cat([self._buffer[start:], self._buffer[:start]])

    def add(self, images: torch.Tensor, labels: torch.Tensor | None = None) -> None:
        """Keep ``images``, with one class label each if the bank is to draw class-balanced."""
        if (labels is None) != (self._labels is None) and self._buffer is not None:
            raise ValueError("a data bank takes labels with every batch or with none")
        if labels is not None and labels.shape != images.shape[:1]:
            raise ValueError(f"labels must hold one class per image: got {tuple(labels.shape)}, {len(images)} images")
        images = images.detach()
        if self.max_size is not None:
            images, labels = images[-self.max_size :], None if labels is None else labels[-self.max_size :]
        n = len(images)
        if self._buffer is None:
            capacity = self.max_size or max(n, 1)
            self._buffer = images.new_empty(capacity, *images.shape[1:])
            self._labels = None if labels is None else torch.empty(capacity, dtype=torch.long, device=images.device)
        elif self.max_size is None and self.count + n > len(self._buffer):
            self._buffer = self._grown(self._buffer, self.count + n)
            self._labels = None if self._labels is None else self._grown(self._labels, self.count + n)
        rows = self._positions(self.count + torch.arange(n, device=self._buffer.device))
        self._buffer[rows] = images.to(self._buffer)
        if labels is not None:
            self._labels[rows] = labels.to(self._labels)
        self.count += n
        self.last_added = n

    def _grown(self, buffer: torch.Tensor, needed: int) -> torch.Tensor:
        grown = buffer.new_empty(max(2 * len(buffer), needed), *buffer.shape[1:])
        grown[: self.count] = buffer[: self.count]
        return grown

    def _balanced_rows(self, n: int) -> torch.Tensor:
        """``n`` rows: a class drawn uniformly from those the bank holds, then one of that class's images."""
        labels = self._labels[: len(self)]
        order = labels.argsort(stable=True)  # rows grouped by class, classes ascending
        counts = labels.unique(return_counts=True)[1]
        starts = counts.cumsum(0) - counts
        classes = torch.randint(len(counts), (n,), device=labels.device)
        offsets = (torch.rand(n, device=labels.device) * counts[classes]).long().clamp_max(counts[classes] - 1)
        return order[starts[classes] + offsets]

    def _positions(self, indices: torch.Tensor) -> torch.Tensor:
        return indices % len(self._buffer) if self.max_size is not None else indices

    def sample(self, batch_size: int, recent_share: float = 0.0, balanced: bool = False) -> torch.Tensor:
        """A batch of float pixels in [0, 1] (a real image set is kept as uint8 and converted here)."""
        if self._buffer is None:
            raise RuntimeError("the data bank is empty: synthesize before sampling")
        if balanced and self._labels is None:
            raise ValueError("balanced draws need a bank whose images were added with labels")
        device = self._buffer.device
        recent = min(round(batch_size * recent_share), batch_size)
        if balanced:
            rows = self._balanced_rows(batch_size - recent)
        else:
            rows = torch.randint(len(self), (batch_size - recent,), device=device)
        if recent:
            newest = self.count - self.last_added + torch.randint(self.last_added, (recent,), device=device)
            rows = torch.cat([rows, self._positions(newest)])
        return to_unit_range(self._buffer[rows])

    def state_dict(self) -> dict:
        """The kept images in buffer order, with the counters that place new ones (resuming samples alike)."""
        if self._buffer is None:
            return {}
        state = {"buffer": self._buffer[: len(self)].contiguous(), "count": self.count, "last_added": self.last_added}
        if self._labels is not None:
            state["labels"] = self._labels[: len(self)].contiguous()
        return state

    def load_state_dict(self, state: dict) -> None:
        if not state:
            return
        self._buffer, self._labels = self._restored(state["buffer"]), None
        if "labels" in state:
            self._labels = self._restored(state["labels"])
        self.count, self.last_added = int(state["count"]), int(state["last_added"])

    def _restored(self, kept: torch.Tensor) -> torch.Tensor:
        """A saved buffer, with room for a bounded bank to fill up to ``max_size``."""
        if self.max_size is not None and len(kept) < self.max_size:
            buffer = kept.new_empty(self.max_size, *kept.shape[1:])
            buffer[: len(kept)] = kept
            return buffer
        return kept.clone()
