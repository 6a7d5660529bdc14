"""KiOPModel: one frozen target serving the tasks of one or many prompts, as PEFT's PeftModel serves adapters.

A prompt is a few KB of ring pixels; the target is the large part. So one loaded target carries any number of
prompts (``load_prompt``), each named; ``set_prompt`` picks the active one, and a mixed batch (``task=[...]``,
one task per sample) runs each prompt's rings on its own samples and the target once per canvas size.
"""

from __future__ import annotations

import json
import os
import warnings
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
from torch import nn

from .classifiers import HUB_OPTIONS, FrozenClassifier, load_classifier
from .clip import load_class_vectors
from .configuration_kiop import TARGET_TASK, KiOPPromptConfig, did_you_mean
from .hub import read_prompt_index
from .label_mapping import random_label_maps
from .modeling_kiop import KiOPVisualPrompt
from .pixels import checked_pixels, match_channels
from .saving import PROMPT_INDEX, PROMPT_NAME, staged_save

DEFAULT_PROMPT = "default"


class KiOPModel(nn.Module):
    """A frozen target with its prompts: ``model(pixel_values, task=...)`` returns that task's logits.

    ``pixel_values`` are **unnormalised pixels in [0, 1]** (batch, C, H, W) at the prompt's ``image_size`` (uint8
    0-255 is divided by 255); the target normalises them itself. ``KiOPImageProcessor`` (or
    ``kiop_hf.pixels.prepare``) brings images of other sizes, modes and dtypes there, as training and evaluation do.

    Tasks: ``None`` (or ``"target"``) is the target's own task, seen through the active prompt's core ring with all
    target classes; a source task name (``"fashion"``) is the active prompt's task, through rings ``0..k + 1`` and
    read through its label map; ``"prompt_name/task"`` (``"letters-fashion/fashion"``, ``"letters-fashion/target"``)
    addresses any loaded prompt's task. ``task`` may also be a list, one task per sample (a mixed batch): the result
    is then a list of 1-D logits tensors in the input order, each over its own task's classes.

    Only prompts are saved; the target is loaded again from the id and revision each prompt's config records.
    """

    def __init__(self, prompt: KiOPVisualPrompt, target: FrozenClassifier, prompt_name: str = DEFAULT_PROMPT):
        super().__init__()
        self.target = target
        self._prompt_disabled = False
        self.prompts = nn.ModuleDict()
        self.active_prompt = prompt_name
        self.add_prompt(prompt, prompt_name)

    # -- prompts ------------------------------------------------------------------------------------------------

    @property
    def prompt(self) -> KiOPVisualPrompt:
        """The active prompt (``set_prompt``)."""
        return self.prompts[self.active_prompt]

    @property
    def config(self) -> KiOPPromptConfig:
        return self.prompt.config

    @property
    def prompt_names(self) -> list[str]:
        return list(self.prompts)

    def add_prompt(self, prompt: KiOPVisualPrompt, name: str) -> None:
        """Serve ``prompt`` under ``name`` on this target, after checking it was made for it."""
        if not isinstance(name, str) or not PROMPT_NAME.fullmatch(name) or name == TARGET_TASK:
            raise ValueError(
                f"a prompt name is 1-64 letters, digits, '-' or '_' (not {TARGET_TASK!r}), got {name!r}; pass name="
            )
        if name in self.prompts:
            raise ValueError(f"a prompt named {name!r} is already loaded ({self.prompt_names}); pass another name=")
        _check_target(prompt.config, self.target, strict=bool(self.prompts))
        self.prompts[name] = prompt.to(device=self.device, dtype=self.dtype)  # where the target runs

    def load_prompt(self, prompt_name_or_path: str | os.PathLike, name: str | None = None, **kwargs) -> str:
        """Add a saved or published prompt to this already-loaded target (no second copy of the target).

        The prompt must have been made for this target: the same id and commit, class count, channels, input size
        and preprocessing, or the error says which differs. ``name`` defaults to the repo's or folder's name;
        ``revision``, ``token``, ``cache_dir`` and ``local_files_only`` reach the download. Returns the name.
        """
        where = os.fspath(prompt_name_or_path)
        name = name or (Path(where).resolve() if os.path.isdir(where) else Path(where)).name.replace(".", "-")
        prompt = KiOPVisualPrompt.from_pretrained(prompt_name_or_path, **kwargs)
        self.add_prompt(prompt.eval(), name)
        return name

    def set_prompt(self, name: str) -> None:
        """Make ``name`` the active prompt: the one plain task names and ``task=None`` refer to."""
        self._prompt_named(name)
        self.active_prompt = name

    def delete_prompt(self, name: str) -> None:
        """Unload prompt ``name`` (not the active one: ``set_prompt`` another first)."""
        self._prompt_named(name)
        if name == self.active_prompt:
            raise ValueError(f"{name!r} is the active prompt; set_prompt() another one before deleting it")
        del self.prompts[name]

    def _prompt_named(self, name: str) -> KiOPVisualPrompt:
        if name not in self.prompts:
            raise KeyError(f"no prompt named {name!r}; the loaded prompts are {self.prompt_names}")
        return self.prompts[name]

    def resolve_task(self, task: str | None) -> tuple[str, str | None]:
        """``(prompt name, task within that prompt)``, with ``None`` for the target's own task."""
        if task is None:
            return self.active_prompt, None
        if not isinstance(task, str):
            raise TypeError(f"task must be a string, None, or a list of them (one per sample), got {task!r}")
        name, sep, inner = task.rpartition("/")
        name = name if sep else self.active_prompt
        config = self._prompt_named(name).config
        if inner == TARGET_TASK:
            return name, None
        if inner not in config.source_names:
            served = [*config.source_names, TARGET_TASK]
            guess = did_you_mean(inner, served)
            raise ValueError(
                f"unknown task {task!r}"
                + (f" (did you mean {guess!r}?)" if guess else "")
                + f": prompt {name!r} serves {served}"
                + (
                    f"; other prompts are addressed as 'name/task' ({self.prompt_names})"
                    if len(self.prompts) > 1
                    else ""
                )
            )
        return name, inner

    def tasks(self) -> list[str]:
        """Every task this model serves, addressed unambiguously (``"prompt_name/task"``)."""
        return [f"{name}/{task}" for name, prompt in self.prompts.items() for task in prompt.config.task_names]

    def input_channels(self, task: str | None = None) -> int:
        """Channels of ``task``'s images: its source's (a grayscale source's task takes grayscale images, which the
        model serves to the target), or the canvas's for the target's own task."""
        name, inner = self.resolve_task(task)
        config = self.prompts[name].config
        return config.num_channels if inner is None else config.source(inner)["num_channels"]

    def class_names(self, task: str | None = None) -> list[str]:
        name, inner = self.resolve_task(task)
        if inner is None:
            return self.target.class_names
        return self.prompts[name].config.source(inner)["class_names"]

    # -- inference ----------------------------------------------------------------------------------------------

    def _canvas(self, pixels: torch.Tensor, name: str, task: str | None) -> torch.Tensor:
        prompt = self.prompts[name]
        size = prompt.config.image_size
        if pixels.shape[-1] != size or pixels.shape[-2] != size:
            raise ValueError(
                f"task {f'{name}/{task}' if task else f'{name}/target'} takes {size}x{size} images, got "
                f"{pixels.shape[-2]}x{pixels.shape[-1]}; prompts of other input sizes are served in batches of their "
                "own (KiOPImageProcessor.from_prompt_config resizes for each)"
            )
        return prompt(match_channels(pixels, prompt.config.num_channels).to(self.dtype), task)

    def _read(self, logits: torch.Tensor, name: str, task: str | None) -> torch.Tensor:
        """A task's logits from the target's: all classes for its own task, the label map's for a source."""
        return logits if task is None else logits[:, self.prompts[name].config.source(task)["label_map"]]

    def target_logits(self, pixel_values: torch.Tensor, task: str | None = None) -> torch.Tensor:
        """All of the target's logits for images wrapped in ``task``'s rings, before the task's label map."""
        name, inner = self.resolve_task(task)
        return self.target(self._canvas(checked_pixels(pixel_values), name, inner))

    def forward(self, pixel_values: torch.Tensor, task: str | None | list[str | None] = None):
        if self._prompt_disabled:
            if task not in (None, TARGET_TASK):
                raise ValueError(f"with the prompt disabled only the target's own task is served, got task={task!r}")
            return self.target(checked_pixels(pixel_values))
        if isinstance(task, (list, tuple)):
            return self._mixed(checked_pixels(pixel_values), list(task))
        return self._read(self.target_logits(pixel_values, task), *self.resolve_task(task))

    def _mixed(self, pixels: torch.Tensor, tasks: list[str | None]) -> list[torch.Tensor]:
        """One task per sample: each prompt's rings on its samples, then the target once per canvas size."""
        if len(tasks) != len(pixels):
            raise ValueError(f"a mixed batch needs one task per sample: {len(pixels)} images but {len(tasks)} tasks")
        groups: dict[tuple[str, str | None], list[int]] = defaultdict(list)
        for index, task in enumerate(tasks):
            groups[self.resolve_task(task)].append(index)
        by_size: dict[int, list[tuple[tuple[str, str | None], list[int], torch.Tensor]]] = defaultdict(list)
        for key, indices in groups.items():
            canvas = self._canvas(pixels[indices], *key)
            by_size[canvas.shape[-1]].append((key, indices, canvas))
        results: list[torch.Tensor | None] = [None] * len(tasks)
        for parts in by_size.values():
            logits = self.target(torch.cat([canvas for _, _, canvas in parts]))
            for (key, indices, _), chunk in zip(parts, logits.split([len(i) for _, i, _ in parts])):
                for index, row in zip(indices, self._read(chunk, *key)):
                    results[index] = row
        return results

    # -- what a transformers user tries first ---------------------------------------------------------------

    @property
    def device(self) -> torch.device:
        """Where the target runs (prompts follow it when added)."""
        return self.target.mean.device

    @property
    def dtype(self) -> torch.dtype:
        return self.target.mean.dtype

    def num_parameters(self, only_trainable: bool = False) -> int:
        """Parameters of the prompts and the target (only the prompts' are trainable)."""
        return sum(p.numel() for p in self.parameters() if p.requires_grad or not only_trainable)

    def print_trainable_parameters(self) -> None:
        """As PEFT prints it: the prompts' pixels against everything the model holds."""
        trainable, total = self.num_parameters(only_trainable=True), self.num_parameters()
        print(f"trainable params: {trainable:,} || all params: {total:,} || trainable%: {100 * trainable / total:.4f}")

    # -- building, loading, saving ------------------------------------------------------------------------------

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
        prompt_name: str | None = None,
        selected_prompts: list[str] | None = None,
        **kwargs,
    ) -> KiOPModel:
        """Load a saved prompt folder or Hub repo: its prompt, then the target its config names at the revision it
        recorded (or ``target``, which overrides it; a target that does not fit the prompt is refused), then every
        other prompt it holds (``save_pretrained``'s subfolders; ``selected_prompts`` picks some by name). The top
        prompt keeps the name it was saved under (``prompt_name`` renames it). Further prompts join with
        ``load_prompt``.

        Hub keyword arguments (``token``, ``cache_dir``, ``local_files_only``, ``force_download``) apply to every
        file read: the prompt's, the target's and the stored class vectors.
        """
        prompt = KiOPVisualPrompt.from_pretrained(prompt_name_or_path, revision=revision, **kwargs)
        hub = {key: kwargs[key] for key in HUB_OPTIONS if key in kwargs}
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
        if prompt.dtype != torch.float32:  # from_pretrained(dtype=...): the target runs in it too
            target = target.to(prompt.dtype)
        index = read_prompt_index(prompt_name_or_path, revision, **hub)
        names = index["prompts"] if index else [DEFAULT_PROMPT]
        selected = names if selected_prompts is None else list(selected_prompts)
        unknown = sorted(set(selected) - set(names))
        if unknown:
            raise ValueError(f"selected_prompts names {unknown}, but {os.fspath(prompt_name_or_path)!r} holds {names}")
        model = cls(prompt.eval(), target, prompt_name or names[0])
        for name in [name for name in names[1:] if name in selected]:
            model.load_prompt(prompt_name_or_path, name=name, subfolder=name, revision=revision, **hub)
        return model

    @contextmanager
    def disable_prompt(self) -> Iterator[None]:
        """Serve the bare target inside the block (PEFT's ``disable_adapter``): ``model(pixel_values)`` is then the
        target's own logits on the images as given, with no ring around them."""
        self._prompt_disabled = True
        try:
            yield
        finally:
            self._prompt_disabled = False

    def save_pretrained(
        self,
        save_directory: str | os.PathLike,
        repo_id: str | None = None,
        sources: dict[str, FrozenClassifier] | None = None,
        card: dict | None = None,
        selected_prompts: list[str] | None = None,
        **kwargs,
    ) -> None:
        """Save every loaded prompt (or ``selected_prompts``), all or nothing: the active one at the top of
        ``save_directory`` (config.json + model.safetensors + preprocessor_config.json + card), each other one in a
        subfolder of its name, as PEFT saves adapters, with ``prompts.json`` naming them (a folder of one prompt has
        no index); ``from_pretrained`` loads them all back. The class vectors of the CLIP-family models (the
        target, and ``sources`` if given) are stored beside the active prompt; the target's weights stay where they
        came from.

        ``card`` adds model card content to the active prompt's card (``write_model_card`` keywords: ``args``,
        ``history``, ``results``, ...).
        """
        repo_id = repo_id or Path(save_directory).resolve().name  # the card names the folder, not its staging
        with staged_save(save_directory) as staging:
            self.write_files(staging, repo_id=repo_id, sources=sources, card=card, selected_prompts=selected_prompts)

    def write_files(
        self,
        folder: str | os.PathLike,
        repo_id: str,
        sources: dict[str, FrozenClassifier] | None = None,
        card: dict | None = None,
        selected_prompts: list[str] | None = None,
    ) -> None:
        """Write the prompts' files into ``folder`` (a staging folder: ``save_pretrained`` and the trainer make the
        one crash-safe save around it)."""
        names = self.prompt_names if selected_prompts is None else list(selected_prompts)
        for name in names:
            self._prompt_named(name)
        if self.active_prompt not in names:
            raise ValueError(f"selected_prompts must include the active prompt {self.active_prompt!r}, got {names}")
        folder = Path(folder)
        others = [name for name in names if name != self.active_prompt]
        self.prompt.write_files(
            folder,
            repo_id=repo_id,
            card_model=self,
            card=card,
            class_vector_models={TARGET_TASK: self.target, **(sources or {})},
        )
        for name in others:
            (folder / name).mkdir()
            self.prompts[name].write_files(folder / name, repo_id=f"{repo_id}/{name}")
        if others:  # a folder of one prompt needs no index (and reads as folders saved before there was one)
            index = {"active_prompt": self.active_prompt, "prompts": [self.active_prompt, *others]}
            (folder / PROMPT_INDEX).write_text(json.dumps(index, indent=2) + "\n")

    def push_to_hub(self, repo_id: str, **kwargs):
        """Push the active prompt (not the target, which the prompt's config names) with a model card; keyword
        arguments as for ``KiOPVisualPrompt.push_to_hub``."""
        from .hub import push_saved

        return push_saved(self, repo_id, **kwargs)


def _same_model(name: str, recorded: str | None) -> bool:
    """Whether ``name`` is the recorded target: the same Hub id, or the same folder however it is written."""
    if recorded is None:
        return False
    if os.path.isdir(os.path.expanduser(name)):
        return os.path.abspath(os.path.expanduser(name)) == os.path.abspath(recorded)
    return name == recorded


def _check_target(config: KiOPPromptConfig, target: FrozenClassifier, strict: bool) -> None:
    """Refuse a target the prompt cannot run on (classes, channels, input size); a target with the right shapes but
    another identity or preprocessing is refused too when ``strict`` (a prompt added to a loaded target), and
    warned about otherwise (a target the caller chose explicitly)."""
    who = target.name_or_path or "the given target"
    if config.target_num_labels is not None and target.num_labels != config.target_num_labels:
        raise ValueError(
            f"the prompt was made for a target with {config.target_num_labels} classes, "
            f"but {who} has {target.num_labels}"
        )
    if target.num_channels != config.num_channels:
        raise ValueError(
            f"the prompt makes {config.num_channels}-channel canvases, but {who} takes {target.num_channels} channels"
        )
    if config.target_image_size is not None and target.image_size != config.target_image_size:
        raise ValueError(
            f"the prompt was made for a target with {config.target_image_size}px inputs, "
            f"but {who} takes {target.image_size}px"
        )
    differences = []
    if strict and config.target_name_or_path is not None and target.name_or_path is not None:
        if not _same_model(target.name_or_path, config.target_name_or_path):
            differences.append(f"id ({config.target_name_or_path!r} recorded, {target.name_or_path!r} loaded)")
        elif None not in (config.target_revision, target.revision) and config.target_revision != target.revision:
            differences.append(f"commit ({config.target_revision} recorded, {target.revision} loaded)")
    if config.target_class_names is not None and list(config.target_class_names) != list(target.class_names):
        differences.append("class names")
    for name, recorded, actual in (("mean", config.target_mean, target.mean), ("std", config.target_std, target.std)):
        given = actual.flatten().float().cpu()  # within the rounding of the target's dtype (bf16 keeps 8 bits)
        if recorded is not None and not torch.allclose(
            torch.tensor(recorded), given, rtol=torch.finfo(actual.dtype).eps, atol=1e-6
        ):
            differences.append(f"{name} ({recorded} recorded, {actual.flatten().tolist()} given)")
    if not differences:
        return
    message = f"{who} differs from the target this prompt was trained on in its {', '.join(differences)}"
    if strict:
        raise ValueError(f"{message}; load the prompt onto its own target with KiOPModel.from_pretrained")
    warnings.warn(f"{message}; its outputs may not mean what the prompt's tasks expect", stacklevel=4)
