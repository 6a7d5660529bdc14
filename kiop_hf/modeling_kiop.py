"""The KiOP visual prompt (nested learnable padding rings) and the prompted target built from it."""

from __future__ import annotations

import os
import warnings
from functools import lru_cache
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors import SafetensorError
from torch import nn
from transformers import PreTrainedModel
from transformers import initialization as init

from .classifiers import FrozenClassifier, load_classifier
from .clip import load_class_vectors, save_class_vectors
from .configuration_kiop import TARGET_TASK, KiOPPromptConfig
from .label_mapping import random_label_maps
from .pixels import checked_pixels, match_channels
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

        hub_kwargs = {
            k: kwargs[k] for k in ("cache_dir", "token", "force_download", "local_files_only") if k in kwargs
        }
        check_prompt_repo(pretrained_model_name_or_path, revision, **hub_kwargs)
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

    def save_pretrained(self, save_directory: str | os.PathLike, *args, repo_id: str | None = None, **kwargs) -> None:
        """``config.json`` + ``model.safetensors``, and a model card (README.md, naming ``repo_id`` in its usage
        snippet) with the prompt's picture."""
        from .model_card import write_model_card

        repo_id = repo_id or Path(save_directory).resolve().name  # the card names the folder, not its staging
        push = kwargs.pop("push_to_hub", False)  # from the saved folder, not from its staging
        with staged_save(save_directory) as staging:  # a kill leaves the old prompt or the new one
            super().save_pretrained(staging, *args, **kwargs)
            write_model_card(self, staging, repo_id=repo_id)  # never overwrites a README a person wrote
        if push:
            from .hub import push_prompt_folder

            push_prompt_folder(save_directory, repo_id)

    def push_to_hub(self, repo_id: str, **kwargs):
        """Upload the prompt with a model card (and its picture) to ``repo_id``, as PEFT adapters are pushed.

        Keyword arguments: ``commit_message``, ``private``, ``token``, ``revision``, ``create_pr``. The card here
        describes the prompt alone; ``KiOPTrainer.push_to_hub`` publishes the training folder, whose card also
        has the training setup, results and synthetic samples.
        """
        from .hub import push_saved

        return push_saved(self, repo_id, **kwargs)


def _same_model(name: str, recorded: str | None) -> bool:
    """Whether ``name`` is the recorded target: the same Hub id, or the same folder however it is written."""
    if recorded is None:
        return False
    if os.path.isdir(os.path.expanduser(name)):
        return os.path.abspath(os.path.expanduser(name)) == os.path.abspath(recorded)
    return name == recorded


def _warn_if_another_target(config: KiOPPromptConfig, target: FrozenClassifier) -> None:
    """A target with the right shapes but other classes or preprocessing runs, but the prompt was not made for it."""
    differences = []
    if config.target_class_names is not None and list(config.target_class_names) != list(target.class_names):
        differences.append("class names")
    for name, recorded, actual in (("mean", config.target_mean, target.mean), ("std", config.target_std, target.std)):
        if recorded is not None and not torch.allclose(torch.tensor(recorded), actual.flatten().cpu(), atol=1e-6):
            differences.append(f"{name} ({recorded} recorded, {actual.flatten().tolist()} given)")
    if differences:
        warnings.warn(
            f"{target.name_or_path or 'the given target'} differs from the target this prompt was trained on in its "
            f"{', '.join(differences)}; its outputs may not mean what the prompt's tasks expect",
            stacklevel=3,
        )


class KiOPModel(nn.Module):
    """A frozen target with its prompt: ``model(pixel_values, task=...)`` returns that task's logits.

    ``pixel_values`` are **unnormalised pixels in [0, 1]** (batch, C, H, W) at the prompt's ``image_size`` (uint8
    0-255 is divided by 255); the target normalises them itself. ``kiop_hf.pixels.prepare`` brings images of other
    sizes, channel counts or dtypes there, as training and evaluation do.

    ``task=None`` (or ``"target"``) is the target's own task, seen through the core ring with all target classes.
    A source task's images go through rings ``0..k + 1`` and its logits are read through the source's label map.
    Only the prompt is saved; the target is loaded again from the id and revision the prompt's config records.
    """

    def __init__(self, prompt: KiOPVisualPrompt, target: FrozenClassifier):
        super().__init__()
        config = prompt.config
        if config.target_num_labels is not None and target.num_labels != config.target_num_labels:
            raise ValueError(
                f"the prompt was made for a target with {config.target_num_labels} classes, but "
                f"{target.name_or_path or 'the given target'} has {target.num_labels}"
            )
        if target.num_channels != config.num_channels:
            raise ValueError(
                f"the prompt makes {config.num_channels}-channel canvases, but "
                f"{target.name_or_path or 'the given target'} takes {target.num_channels} channels"
            )
        self.prompt = prompt
        self.target = target

    @property
    def config(self) -> KiOPPromptConfig:
        return self.prompt.config

    def class_names(self, task: str | None = None) -> list[str]:
        if task is None or task == TARGET_TASK:
            return self.target.class_names
        return self.config.source(task)["class_names"]

    def target_logits(self, pixel_values: torch.Tensor, task: str | None = None) -> torch.Tensor:
        """All of the target's logits for images wrapped in ``task``'s rings, before the task's label map."""
        pixels = checked_pixels(pixel_values)
        return self.target(self.prompt(match_channels(pixels, self.config.num_channels), task))

    def forward(self, pixel_values: torch.Tensor, task: str | None = None) -> torch.Tensor:
        logits = self.target_logits(pixel_values, task)
        if task is None or task == TARGET_TASK:
            return logits
        return logits[:, self.config.source(task)["label_map"]]

    @classmethod
    def from_models(
        cls,
        target: FrozenClassifier,
        sources: dict[str, FrozenClassifier],
        *,
        image_size: int,
        ring_sizes: list[int],
        label_maps: dict[str, list[int]] | None = None,
        seed: int = 0,
    ) -> KiOPModel:
        """A fresh (grey) prompt around ``target`` for ``sources`` (task name -> classifier).

        Without ``label_maps``, each source gets a fixed random slice of the target's classes.
        """
        label_mapping = "random" if label_maps is None else "given"
        if label_maps is None:
            drawn = random_label_maps([s.num_labels for s in sources.values()], target.num_labels, seed=seed)
            label_maps = dict(zip(sources, drawn))
        config = KiOPPromptConfig(
            image_size=image_size,
            ring_sizes=ring_sizes,
            num_channels=target.num_channels,
            target_name_or_path=target.name_or_path,
            target_revision=target.revision,
            target_library=target.library,
            target_num_labels=target.num_labels,
            target_image_size=target.image_size,
            target_mean=target.mean.flatten().tolist(),
            target_std=target.std.flatten().tolist(),
            target_class_names=target.class_names,
            sources=[
                {
                    "name": name,
                    "name_or_path": source.name_or_path,
                    "revision": source.revision,
                    "class_names": source.class_names,
                    "label_map": label_maps[name],
                    "num_channels": source.num_channels,
                    "image_size": source.image_size,
                }
                for name, source in sources.items()
            ],
            label_mapping=label_mapping,
        )
        return cls(KiOPVisualPrompt(config), target)

    @classmethod
    def from_pretrained(
        cls,
        prompt_name_or_path: str | os.PathLike,
        *,
        target: FrozenClassifier | nn.Module | str | None = None,
        revision: str | None = None,
        **kwargs,
    ) -> KiOPModel:
        """Load a prompt (folder or Hub id), then the target its config names at the revision it recorded (or
        ``target``, which overrides it); a target that does not fit the prompt is refused.

        Hub keyword arguments (``token``, ``cache_dir``, ``local_files_only``, ``force_download``) apply to every
        file read: the prompt's, the target's and the stored class vectors.
        """
        prompt = KiOPVisualPrompt.from_pretrained(prompt_name_or_path, revision=revision, **kwargs)
        hub = {key: kwargs[key] for key in ("token", "cache_dir", "local_files_only") if key in kwargs}
        config = prompt.config
        if target is None:
            if config.target_name_or_path is None or config.target_library == "module":
                raise ValueError(
                    "this prompt's target is not a Hub or folder model; pass it with target=load_classifier(...)"
                )
            target = config.target_name_or_path
        if not isinstance(target, FrozenClassifier):
            if isinstance(target, (str, os.PathLike)):  # a named target states its own classes and preprocessing
                recorded = _same_model(os.fspath(target), config.target_name_or_path)
                zero_shot = recorded and config.target_library == "clip"  # its class vectors came with the prompt
                vectors = load_class_vectors(prompt_name_or_path, revision, **hub) if zero_shot else {}
                target = load_classifier(
                    target,
                    revision=config.target_revision if recorded else None,
                    library=config.target_library if recorded else None,
                    class_names=config.target_class_names if zero_shot else None,
                    class_vectors=vectors.get(TARGET_TASK),
                    **hub,
                )
            else:  # a bare module gets the preprocessing the prompt recorded
                target = load_classifier(
                    target,
                    class_names=config.target_class_names,
                    image_size=config.target_image_size,
                    mean=config.target_mean,
                    std=config.target_std,
                )
        if config.target_image_size is not None and target.image_size != config.target_image_size:
            raise ValueError(
                f"the prompt was made for a target with {config.target_image_size}px inputs, but "
                f"{target.name_or_path or 'the given target'} takes {target.image_size}px"
            )
        _warn_if_another_target(config, target)
        return cls(prompt.eval(), target)

    def save_pretrained(
        self,
        save_directory: str | os.PathLike,
        repo_id: str | None = None,
        sources: dict[str, FrozenClassifier] | None = None,
        card: dict | None = None,
        **kwargs,
    ) -> None:
        """Save the prompt (config.json + model.safetensors + card) and the class vectors of its CLIP-family
        models (the target, and ``sources`` if given); the target's weights stay where they came from.

        ``card`` adds model card content (``write_model_card`` keywords: ``args``, ``history``, ``results``, ...).
        """
        from .model_card import write_model_card

        repo_id = repo_id or Path(save_directory).resolve().name  # the card names the folder, not its staging
        push = kwargs.pop("push_to_hub", False)  # from the saved folder, not from its staging
        with staged_save(save_directory) as staging:  # a kill leaves the old prompt or the new one
            PreTrainedModel.save_pretrained(self.prompt, staging, **kwargs)  # config and weights; the card below
            save_class_vectors(staging, {TARGET_TASK: self.target, **(sources or {})})
            write_model_card(self, staging, repo_id=repo_id, **(card or {}))  # never overwrites a user's README
        if push:
            from .hub import push_prompt_folder

            push_prompt_folder(save_directory, repo_id)

    def push_to_hub(self, repo_id: str, **kwargs):
        """Push the prompt (not the target, which the prompt's config names) with a model card; keyword arguments
        as for ``KiOPVisualPrompt.push_to_hub``."""
        from .hub import push_saved

        return push_saved(self, repo_id, **kwargs)
