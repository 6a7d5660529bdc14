"""Configuration of a KiOP visual prompt: everything needed to use a trained prompt later."""

from __future__ import annotations

import difflib
import math
import numbers
import operator
import os
import re
from typing import Any

import numpy as np
import torch
from transformers import PretrainedConfig
from transformers.utils import CONFIG_NAME, logging

from .pixels import can_convert_channels

logger = logging.get_logger(__name__)

TARGET_TASK = "target"
LIBRARIES = ("transformers", "timm", "clip", "module")  # "clip": a transformers CLIP-family model, zero-shot
LABEL_MAPPINGS = ("random", "frequency", "given")
# Upper bounds, so that a published config.json cannot make loading it take minutes or gigabytes.
MAX_SIDE = 1024  # pixels of an image or canvas side
MAX_CHANNELS = 4
MAX_LABELS = 100_000  # classes of a target or source
MAX_SOURCES = 16


class KiOPPromptConfig(PretrainedConfig):
    r"""Geometry of a KiOP prompt and the identity of the models it connects.

    The prompt is a stack of nested padding rings. Ring 0 (the *core*) pads an ``image_size`` image to
    ``ring_sizes[0]``; ring ``i`` pads ``ring_sizes[i - 1]`` to ``ring_sizes[i]``. The target's own task sees
    the core only; source ``k`` (0-based) sees rings ``0..k + 1`` and reads its classes through its label map.

    Args:
        image_size (`int`, *optional*, defaults to 32):
            Side of the (square) input image the prompt is put around.
        ring_sizes (`list[int]`, *optional*, defaults to `(36,)`):
            Side of the canvas after each ring; strictly increasing, one more than there are sources.
        num_channels (`int`, *optional*, defaults to 3):
            Channels of the canvas, i.e. of the target's input.
        target_name_or_path (`str`, *optional*):
            Hub id or folder the frozen target is loaded from.
        target_revision (`str`, *optional*):
            The commit the target resolved to when the prompt was made (pins its weights).
        target_library (`str`, *optional*):
            `"transformers"`, `"timm"`, `"clip"` (a zero-shot CLIP-family model) or `"module"` (a caller-supplied
            `nn.Module`).
        target_num_labels (`int`, *optional*):
            Number of the target's output classes.
        target_image_size (`int`, *optional*):
            The target's own input side.
        target_mean (`list[float]`, *optional*):
            The target's normalisation mean, one value per channel, applied after prompting.
        target_std (`list[float]`, *optional*):
            The target's normalisation std, one positive value per channel.
        target_class_names (`list[str]`, *optional*):
            Names of the target's classes, if known.
        sources (`list[dict]`, *optional*):
            One dict per encapsulated source with `name` (the task name), `name_or_path`, `revision`,
            `class_names`, `label_map` (the target class read for each source class; disjoint across sources),
            and the `num_channels` / `image_size` of the source's images.
        label_mapping (`str`, *optional*, defaults to `"random"`):
            How the label maps were chosen: `"random"`, `"frequency"` or `"given"` (recorded for reproducibility).
        data_regime (`dict[str, str]`, *optional*):
            What the prompt was trained on, set by the trainer: `{"transfer": "synthetic" | "unlabelled" | "mixed",
            "preservation": "BF" | "B" | "none"}`.

    Example:

    ```python
    >>> from kiop_hf import KiOPPromptConfig
    >>> config = KiOPPromptConfig(image_size=32, ring_sizes=[36], target_num_labels=26)
    >>> config.canvas_size_for(None)  # the target's own task sees the core only
    36
    ```
    """

    model_type = "kiop_prompt"

    def __init__(
        self,
        image_size: int = 32,
        ring_sizes: list[int] | tuple[int, ...] = (36,),
        num_channels: int = 3,
        target_name_or_path: str | None = None,
        target_revision: str | None = None,
        target_library: str | None = None,
        target_num_labels: int | None = None,
        target_image_size: int | None = None,
        target_mean: list[float] | None = None,
        target_std: list[float] | None = None,
        target_class_names: list[str] | None = None,
        sources: list[dict[str, Any]] | None = None,
        label_mapping: str = "random",
        data_regime: dict[str, str] | None = None,
        **kwargs,
    ):
        image_size = _check_int("image_size", image_size, MAX_SIDE)
        num_channels = _check_int("num_channels", num_channels, MAX_CHANNELS)
        if not isinstance(ring_sizes, (list, tuple)) or len(ring_sizes) > MAX_SOURCES + 1:
            raise ValueError(
                f"ring_sizes must be a list of at most {MAX_SOURCES + 1} canvas sides, got {ring_sizes!r:.100}"
            )
        ring_sizes = [_check_int(f"ring_sizes[{i}]", size, MAX_SIDE) for i, size in enumerate(ring_sizes)]
        if target_num_labels is not None:
            target_num_labels = _check_int("target_num_labels", target_num_labels, MAX_LABELS)
        if target_image_size is not None:
            target_image_size = _check_int("target_image_size", target_image_size, MAX_SIDE)
        for name, value in (("target_name_or_path", target_name_or_path), ("target_revision", target_revision)):
            if value is not None and not isinstance(value, str):
                raise TypeError(f"{name} must be a string or null, got {value!r}")
        if target_library is not None and target_library not in LIBRARIES:
            raise ValueError(f"target_library must be one of {LIBRARIES} or null, got {target_library!r}")
        if label_mapping not in LABEL_MAPPINGS:
            raise ValueError(f"label_mapping must be one of {LABEL_MAPPINGS}, got {label_mapping!r}")
        if data_regime is not None and not (
            isinstance(data_regime, dict) and all(isinstance(v, str) for v in data_regime.values())
        ):
            raise TypeError(f"data_regime must be an object of strings or null, got {data_regime!r}")
        for name, stats in (("target_mean", target_mean), ("target_std", target_std)):
            if stats is not None and not (
                isinstance(stats, (list, tuple)) and len(stats) <= MAX_CHANNELS and all(map(_finite, stats))
            ):
                raise ValueError(f"{name} must be a list of finite numbers, one per channel, got {stats!r}")
        if target_class_names is not None:
            _check_names("target_class_names", target_class_names)
        if sources is not None and not (isinstance(sources, list) and len(sources) <= MAX_SOURCES):
            raise ValueError(f"sources must be a list of at most {MAX_SOURCES} source entries, got {sources!r:.200}")
        _check_transformers_kwargs(kwargs)
        self.image_size = image_size
        self.ring_sizes = list(ring_sizes)
        self.num_channels = num_channels
        self.target_name_or_path = target_name_or_path
        self.target_revision = target_revision
        self.target_library = target_library
        self.target_num_labels = target_num_labels
        self.target_image_size = target_image_size
        self.target_mean = None if target_mean is None else [float(v) for v in target_mean]  # ints are fine
        self.target_std = None if target_std is None else [float(v) for v in target_std]
        self.target_class_names = None if target_class_names is None else list(target_class_names)
        self.sources = [_normalise_source(source, num_channels, image_size) for source in sources or []]
        self.label_mapping = label_mapping
        self.data_regime = data_regime
        super().__init__(**kwargs)
        self.validate()

    @property
    def source_names(self) -> list[str]:
        return [source["name"] for source in self.sources]

    @property
    def task_names(self) -> list[str]:
        """The target's own task first, then one task per source."""
        return [TARGET_TASK, *self.source_names]

    @classmethod
    def get_config_dict(cls, pretrained_model_name_or_path, **kwargs):
        """transformers' reading of config.json, refusing a folder without one (rather than a default config)
        and a file that does not hold a JSON object."""
        path = os.path.join(os.fspath(pretrained_model_name_or_path), kwargs.get("subfolder") or "")
        if os.path.isdir(path) and not os.path.isfile(os.path.join(path, CONFIG_NAME)):
            raise OSError(f"{path} has no {CONFIG_NAME}: it is not a saved kiop_hf prompt")
        config_dict, kwargs = super().get_config_dict(pretrained_model_name_or_path, **kwargs)
        check_config_object(config_dict)
        return config_dict, kwargs

    def source(self, name: str) -> dict[str, Any]:
        for source in self.sources:
            if source["name"] == name:
                return source
        guess = did_you_mean(name, self.task_names)
        raise KeyError(
            f"unknown task {name!r}{f' (did you mean {guess!r}?)' if guess else ''}; this prompt serves "
            f"{self.task_names}"
        )

    def num_rings_for(self, task: str | None) -> int:
        """How many rings (from the core outwards) the images of ``task`` are wrapped in."""
        if task is None or task == TARGET_TASK:
            return 1
        self.source(task)
        return self.source_names.index(task) + 2

    def canvas_size_for(self, task: str | None) -> int:
        return self.ring_sizes[self.num_rings_for(task) - 1]

    def validate(self) -> None:
        """Raise a ``ValueError`` that names the problem if this configuration cannot describe a usable prompt.

        Runs when the config is built or loaded and, through ``PretrainedConfig.save_pretrained``, before it is
        saved, so an edited config never reaches disk or a model.
        """
        super().validate()
        if not isinstance(self.image_size, int) or self.image_size < 1:
            raise ValueError(f"image_size must be a positive integer, got {self.image_size!r}")
        if not isinstance(self.num_channels, int) or self.num_channels < 1:
            raise ValueError(f"num_channels must be a positive integer, got {self.num_channels!r}")
        sizes = [self.image_size, *self.ring_sizes]
        increasing = all(isinstance(s, int) for s in sizes) and all(a < b for a, b in zip(sizes, sizes[1:]))
        if not self.ring_sizes or not increasing:
            raise ValueError(
                f"ring_sizes must be integers strictly increasing from image_size={self.image_size}, "
                f"got {self.ring_sizes}"
            )
        if len(self.ring_sizes) != len(self.sources) + 1:
            raise ValueError(
                f"a prompt needs one ring for the core plus one per source: {len(self.sources)} source(s) need "
                f"{len(self.sources) + 1} ring sizes, got {len(self.ring_sizes)} ({self.ring_sizes})"
            )
        for name, stats in (("target_mean", self.target_mean), ("target_std", self.target_std)):
            if stats is not None and len(stats) != self.num_channels:
                raise ValueError(f"{name} needs {self.num_channels} values (one per channel), got {stats}")
        if self.target_std is not None and any(v <= 0 for v in self.target_std):
            raise ValueError(f"target_std must be positive, got {self.target_std}")
        names, count = self.target_class_names, self.target_num_labels
        if names is not None and count is not None and len(names) != count:
            raise ValueError(f"target_class_names has {len(names)} names but target_num_labels is {count}")
        self._check_sources()

    def _check_sources(self) -> None:
        names = self.source_names
        if TARGET_TASK in names:
            raise ValueError(f"{TARGET_TASK!r} names the target's own task and cannot be a source name")
        duplicates = sorted({name for name in names if names.count(name) > 1})
        if duplicates:
            raise ValueError(f"source names must be unique; repeated: {duplicates}")
        if not self.sources:
            return
        needed = sum(len(source["class_names"]) for source in self.sources)
        if self.target_num_labels is None:
            raise ValueError("target_num_labels is required once sources are given (label maps index its classes)")
        if needed > self.target_num_labels:
            raise ValueError(
                f"too few target classes: the sources have {needed} classes in all and each needs its own target "
                f"class, but the target has only {self.target_num_labels}"
            )
        owner: dict[int, str] = {}
        for source in self.sources:
            name, label_map = source["name"], source["label_map"]
            if source["image_size"] < 1:
                raise ValueError(f"source {name!r} has image_size {source['image_size']}; a positive size is needed")
            if not can_convert_channels(source["num_channels"], self.num_channels):
                raise ValueError(
                    f"source {name!r} has {source['num_channels']}-channel images, which a "
                    f"{self.num_channels}-channel target cannot be served (only 1 <-> 3 channel conversion is defined)"
                )
            if len(label_map) != len(source["class_names"]):
                raise ValueError(
                    f"source {name!r}: label_map has {len(label_map)} entries for {len(source['class_names'])} classes"
                )
            for index in label_map:
                if not 0 <= index < self.target_num_labels:
                    raise ValueError(
                        f"source {name!r}: label_map entry {index} is out of range for a target with "
                        f"{self.target_num_labels} classes"
                    )
                if index in owner:
                    where = "twice" if owner[index] == name else f"also by source {owner[index]!r}"
                    raise ValueError(
                        f"source {name!r}: target class {index} is used {where}; label maps must be one-to-one and "
                        "disjoint across sources"
                    )
                owner[index] = name


SOURCE_KEYS = ("name", "name_or_path", "revision", "class_names", "label_map", "num_channels", "image_size")


def _normalise_source(source: dict[str, Any], num_channels: int, image_size: int) -> dict[str, Any]:
    """Check a source entry's types (naming the field) and fill its defaults."""
    if not isinstance(source, dict):
        raise TypeError(f"a source entry must be an object, got {source!r:.200}")
    missing = {"name", "class_names", "label_map"} - set(source)
    if missing:
        raise ValueError(f"a source entry needs {sorted(missing)}; got keys {sorted(source)}")
    unknown = sorted(set(source) - set(SOURCE_KEYS))
    if unknown:
        raise ValueError(f"a source entry has unknown keys {unknown}; it takes {list(SOURCE_KEYS)}")
    name = source["name"]
    if not isinstance(name, str) or not name or name.startswith(".") or any(c in name for c in "/\\\0"):
        raise ValueError(
            f"a source name must be a non-empty string usable as a file name (no '/', '\\', leading '.'), got {name!r}"
        )
    for key in ("name_or_path", "revision"):
        if source.get(key) is not None and not isinstance(source[key], str):
            raise TypeError(f"source {name!r}: {key} must be a string or null, got {source[key]!r}")
    _check_names(f"source {name!r}: class_names", source["class_names"])
    label_map = source["label_map"]
    if isinstance(label_map, (np.ndarray, torch.Tensor)) and label_map.ndim == 1:
        label_map = label_map.tolist()
    if not isinstance(label_map, (list, tuple)) or not all(_is_integer(i) for i in label_map):
        raise TypeError(
            f"source {name!r}: label_map must be a list of integers (target classes), got {label_map!r:.200}"
        )
    label_map = [operator.index(i) for i in label_map]
    entry = {key: source.get(key) for key in SOURCE_KEYS}
    entry |= {
        "num_channels": source.get("num_channels", num_channels),
        "image_size": source.get("image_size", image_size),
    }
    entry["num_channels"] = _check_int(f"source {name!r}: num_channels", entry["num_channels"], MAX_CHANNELS)
    # positivity of the size is checked with the other source fields
    entry["image_size"] = _check_int(f"source {name!r}: image_size", entry["image_size"], MAX_SIDE, minimum=-MAX_SIDE)
    return entry | {"class_names": [str(n) for n in entry["class_names"]], "label_map": label_map}


def _is_integer(value) -> bool:
    """Python, NumPy and 0-d torch integers (not booleans)."""
    return (
        isinstance(value, numbers.Integral)
        and not isinstance(value, (bool, np.bool_))
        or (
            isinstance(value, torch.Tensor)
            and value.ndim == 0
            and not value.is_floating_point()
            and value.dtype != torch.bool
        )
    )


def _check_int(name: str, value, maximum: int, minimum: int = 1) -> int:
    """``value`` as a Python int, if it is an integer in range."""
    if not _is_integer(value) or not minimum <= operator.index(value) <= maximum:
        kind = "a positive integer" if minimum == 1 else "an integer"
        raise ValueError(f"{name} must be {kind} (at most {maximum:,}), got {value!r:.100}")
    return operator.index(value)


def _finite(value) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, (bool, np.bool_)) and math.isfinite(value)


def _check_names(field: str, names) -> None:
    if not isinstance(names, (list, tuple)) or len(names) > MAX_LABELS or not all(isinstance(n, str) for n in names):
        raise TypeError(f"{field} must be a list of at most {MAX_LABELS:,} strings, got {names!r:.200}")


def _check_transformers_kwargs(kwargs: dict) -> None:
    """transformers' own config keys that a crafted file could abuse (a huge label count), and unknown keys."""
    if "num_labels" in kwargs:
        _check_int("num_labels", kwargs["num_labels"], MAX_LABELS)
    for key in ("id2label", "label2id"):
        if kwargs.get(key) is not None and not (isinstance(kwargs[key], dict) and len(kwargs[key]) <= MAX_LABELS):
            raise ValueError(f"{key} must be an object of at most {MAX_LABELS:,} entries, got {kwargs[key]!r:.100}")
    unknown = sorted(key for key in kwargs if not key.startswith("_") and key not in _known_transformers_keys())
    if unknown:
        logger.warning(f"KiOPPromptConfig ignores unknown keys {unknown}")


def _known_transformers_keys() -> set[str]:
    if not _KNOWN:
        _KNOWN.update(
            PretrainedConfig().to_dict(),
            {"num_labels", "transformers_version", "architectures", "model_type", "name_or_path"},
        )
    return _KNOWN


_KNOWN: set[str] = set()


def did_you_mean(name: str, choices: list[str]) -> str | None:
    """The task a mistyped name most likely meant: the same letters up to case, ``-`` and ``_``, else the closest."""
    fold = lambda text: re.sub(r"[-_\s]", "", str(text).casefold())  # noqa: E731
    same = [choice for choice in choices if fold(choice) == fold(name)]
    close = difflib.get_close_matches(str(name), choices, n=1, cutoff=0.75)
    return (same or close or [None])[0]


def check_config_object(config_dict) -> None:
    """Refuse a config.json that transformers would trip over later: not a JSON object, or a ``dtype`` /
    ``torch_dtype`` that names no torch dtype."""
    if not isinstance(config_dict, dict):
        raise ValueError(f"{CONFIG_NAME} must hold a JSON object, got {type(config_dict).__name__}")
    for key in ("dtype", "torch_dtype"):
        value = config_dict.get(key)
        if value is None:
            continue
        if not isinstance(value, str) or not isinstance(
            getattr(torch, value.removeprefix("torch."), None), torch.dtype
        ):
            raise ValueError(f"{CONFIG_NAME}: {key} must name a torch dtype such as 'float32', got {value!r}")
