"""The KiOP visual prompt: nested learnable padding rings, a transformers ``PreTrainedModel``."""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors import SafetensorError
from torch import nn
from transformers import PreTrainedModel
from transformers import initialization as init

from .classifiers import HUB_OPTIONS
from .configuration_kiop import KiOPPromptConfig
from .saving import staged_save


@lru_cache(maxsize=64)
def ring_mask(inner: int, outer: int) -> torch.Tensor:
    """Boolean (outer, outer) mask, True on the ring that pads an ``inner`` square to ``outer``.

    Uneven padding puts the extra pixel on the top/left side, as in the method's reference geometry.
    """
    before = (outer - inner + 1) // 2
    mask = torch.ones(outer, outer, dtype=torch.bool)
    mask[before : before + inner, before : before + inner] = False
    return mask


class KiOPVisualPrompt(PreTrainedModel):
    """Learnable pixels around an image, in nested rings: the only trained part of KiOP.

    Only the ring pixels are parameters (``rings[i]`` holds ``num_channels x ring-pixel-count`` values), so the
    saved file is as small as the method promises. A ring's visible value is ``sigmoid(theta)``, starting at grey
    0.5. Prompting happens in pixel space [0, 1]; the target's own normalisation comes afterwards.
    """

    config_class = KiOPPromptConfig
    base_model_prefix = "kiop_prompt"
    main_input_name = "pixel_values"

    def __init__(self, config: KiOPPromptConfig):
        super().__init__(config)
        sizes = [config.image_size, *config.ring_sizes]
        self.rings = nn.ParameterList(
            nn.Parameter(torch.zeros(config.num_channels, outer * outer - inner * inner))
            for inner, outer in zip(sizes, sizes[1:])
        )
        self.post_init()

    def _init_weights(self, module: nn.Module) -> None:
        if isinstance(module, KiOPVisualPrompt):
            for ring in module.rings:
                init.zeros_(ring)

    def ring_canvas(self, index: int) -> torch.Tensor:
        """Ring ``index`` as a (channels, size, size) image in [0, 1], zero inside it."""
        sizes = [self.config.image_size, *self.config.ring_sizes]
        mask = ring_mask(sizes[index], sizes[index + 1]).to(self.rings[index].device)
        canvas = self.rings[index].new_zeros(self.config.num_channels, *mask.shape)
        return canvas.masked_scatter(mask, torch.sigmoid(self.rings[index]))

    def forward(self, pixel_values: torch.Tensor, task: str | None = None) -> torch.Tensor:
        """Wrap images of ``image_size`` in the rings that ``task`` uses (the core only for the target's task)."""
        expected = (self.config.num_channels, self.config.image_size, self.config.image_size)
        if pixel_values.ndim != 4 or tuple(pixel_values.shape[1:]) != expected:
            raise ValueError(
                f"the prompt expects images of shape (batch, {', '.join(map(str, expected))}) with pixels in [0, 1], "
                f"got {tuple(pixel_values.shape)}"
            )
        x = pixel_values
        for index in range(self.config.num_rings_for(task)):
            inner, outer = x.shape[-1], self.config.ring_sizes[index]
            before, after = (outer - inner + 1) // 2, (outer - inner) // 2
            x = F.pad(x, (before, after, before, after)) + self.ring_canvas(index)
        return x

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *model_args, revision: str | None = None, **kwargs):
        """Load a saved or published prompt: safetensors only, every ring present with its exact shape."""
        from .hub import check_prompt_repo

        hub_kwargs = {key: kwargs[key] for key in HUB_OPTIONS if key in kwargs}
        check_prompt_repo(pretrained_model_name_or_path, revision, kwargs.get("subfolder"), **hub_kwargs)
        kwargs |= {"use_safetensors": True, "output_loading_info": True}
        corrupt = f"{os.fspath(pretrained_model_name_or_path)!r}: model.safetensors does not match its config.json"
        try:
            prompt, info = super().from_pretrained(
                pretrained_model_name_or_path, *model_args, revision=revision or "main", **kwargs
            )
        except RuntimeError as error:  # transformers refuses ring tensors of the wrong shape
            raise ValueError(f"{corrupt}; the prompt repo is corrupt or was edited ({error})") from error
        except SafetensorError as error:
            raise ValueError(
                f"{os.fspath(pretrained_model_name_or_path)!r}: model.safetensors is not a readable "
                f"safetensors file ({error})"
            ) from error
        problems = {
            key: info.get(key) for key in ("missing_keys", "unexpected_keys", "mismatched_keys") if info.get(key)
        }
        if problems:
            raise ValueError(f"{corrupt} ({problems}); the prompt repo is corrupt or was edited")
        return prompt

    def save_pretrained(
        self,
        save_directory: str | os.PathLike,
        *args,
        repo_id: str | None = None,
        card_model=None,
        card: dict | None = None,
        class_vector_models: dict | None = None,
        **kwargs,
    ) -> None:
        """``config.json`` + ``model.safetensors`` + ``preprocessor_config.json``, and a model card (README.md,
        naming ``repo_id`` in its usage snippet) with its pictures, all or nothing (``write_files`` in one staged
        save)."""
        repo_id = repo_id or Path(save_directory).resolve().name  # the card names the folder, not its staging
        push = kwargs.pop("push_to_hub", False)  # from the saved folder, not from its staging
        with staged_save(save_directory) as staging:  # a kill leaves the old prompt or the new one
            self.write_files(
                staging,
                *args,
                repo_id=repo_id,
                card_model=card_model,
                card=card,
                class_vector_models=class_vector_models,
                **kwargs,
            )
        if push:
            from .hub import publish

            publish(save_directory, repo_id)

    def write_files(
        self,
        folder: str | os.PathLike,
        *args,
        repo_id: str,
        card_model=None,
        card: dict | None = None,
        class_vector_models: dict | None = None,
        **kwargs,
    ) -> None:
        """Write the prompt's files into ``folder`` (a staging folder: no crash safety of its own).

        ``KiOPModel`` passes the prompted model the card describes (``card_model``), the card's training content
        (``card``) and the CLIP-family models whose class vectors are stored with the prompt.
        """
        from .clip import save_class_vectors
        from .image_processing_kiop import KiOPImageProcessor
        from .model_card import write_model_card

        super().save_pretrained(folder, *args, **kwargs)
        KiOPImageProcessor.from_prompt_config(self.config).save_pretrained(folder)
        save_class_vectors(folder, class_vector_models or {})
        write_model_card(card_model or self, folder, repo_id=repo_id, **(card or {}))  # a person's text stays

    def push_to_hub(self, repo_id: str, **kwargs):
        """Upload the prompt with a model card (and its picture) to ``repo_id``, as PEFT adapters are pushed.

        Keyword arguments as for ``kiop_hf.hub.publish``: ``commit_message``, ``private``, ``token``, ``revision``
        (a branch), ``tag``, ``create_pr``, and ``target_repo`` / ``source_repos`` (the Hub ids of models the prompt
        names by local path). The card here describes the prompt alone; ``KiOPTrainer.push_to_hub`` publishes the
        training folder, whose card also has the training setup, results and synthetic samples.
        """
        from .hub import push_saved

        return push_saved(self, repo_id, **kwargs)
