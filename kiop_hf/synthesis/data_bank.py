"""The data bank: the images of one model that knowledge storing samples from, kept where they are used."""

from __future__ import annotations

import torch

from ..pixels import to_unit_range


class DataBank:
    """The in-memory image set of one model: the synthetic batches of its rounds, or a real image set.

    The images stay on the device they arrive on, in a buffer that grows by doubling (or, with ``max_size``, a ring
    buffer whose newest images replace the oldest), so adding a round's batch or drawing a knowledge-storing batch
    never copies the bank between host and device. ``sample(n, recent_share=s)`` draws a share ``s`` of the batch
    from the newest added batch, the rest uniformly from the whole bank.
    """

    def __init__(self, max_size: int | None = None):
        if max_size is not None and max_size < 1:
            raise ValueError(f"a data bank's max_size must be at least 1 (or None for no limit), got {max_size}")
        self.max_size = max_size
        self._buffer: torch.Tensor | None = None
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

    def add(self, images: torch.Tensor) -> None:
        images = images.detach()
        if self.max_size is not None:
            images = images[-self.max_size :]
        n = len(images)
        if self._buffer is None:
            capacity = self.max_size or max(n, 1)
            self._buffer = images.new_empty(capacity, *images.shape[1:])
        elif self.max_size is None and self.count + n > len(self._buffer):
            grown = self._buffer.new_empty(max(2 * len(self._buffer), self.count + n), *self._buffer.shape[1:])
            grown[: self.count] = self._buffer[: self.count]
            self._buffer = grown
        rows = self._positions(self.count + torch.arange(n, device=self._buffer.device))
        self._buffer[rows] = images.to(self._buffer)
        self.count += n
        self.last_added = n

    def _positions(self, indices: torch.Tensor) -> torch.Tensor:
        return indices % len(self._buffer) if self.max_size is not None else indices

    def sample(self, batch_size: int, recent_share: float = 0.0) -> torch.Tensor:
        """A batch of float pixels in [0, 1] (a real image set is kept as uint8 and converted here)."""
        if self._buffer is None:
            raise RuntimeError("the data bank is empty: synthesize before sampling")
        device = self._buffer.device
        recent = min(round(batch_size * recent_share), batch_size)
        rows = torch.randint(len(self), (batch_size - recent,), device=device)
        if recent:
            newest = self.count - self.last_added + torch.randint(self.last_added, (recent,), device=device)
            rows = torch.cat([rows, self._positions(newest)])
        return to_unit_range(self._buffer[rows])

    def state_dict(self) -> dict:
        """The kept images in buffer order, with the counters that place new ones (resuming samples alike)."""
        if self._buffer is None:
            return {}
        return {"buffer": self._buffer[: len(self)].contiguous(), "count": self.count, "last_added": self.last_added}

    def load_state_dict(self, state: dict) -> None:
        if not state:
            return
        buffer = state["buffer"]
        if self.max_size is not None and len(buffer) < self.max_size:
            self._buffer = buffer.new_empty(self.max_size, *buffer.shape[1:])
            self._buffer[: len(buffer)] = buffer
        else:
            self._buffer = buffer.clone()
        self.count, self.last_added = int(state["count"]), int(state["last_added"])
