"""One interface for frozen classifiers of any family: pixels in [0, 1] in, logits out.

Sources and targets come from transformers, from timm, or from any ``nn.Module``; KiOP only needs their logits,
their class names and how they preprocess. ``load_classifier`` hides the family behind ``FrozenClassifier``.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Sequence
from pathlib import Path

import torch
from huggingface_hub import HfApi, constants, hf_hub_download
from huggingface_hub.errors import EntryNotFoundError, GatedRepoError, RepositoryNotFoundError, RevisionNotFoundError
from torch import nn

from .clip import is_clip_config, load_zero_shot
from .configuration_kiop import LIBRARIES
from .folding import folded_network, logits_of
from .pixels import match_channels

_TIMM_PREFIX = "hf-hub:"


class FrozenClassifier(nn.Module):
    """A classifier that is never trained: always in eval mode, no parameter requires grad.

    It takes pixels in [0, 1] with any channel count convertible to its own (1 <-> 3), applies the model's own
    normalisation and returns logits. Gradients still flow to the *input*, which is what prompt training needs.

    Frozen, the network may run as its faster twin with BatchNorm folded into its convolutions
    (``folding.folded_network``), built at the first call; while any of its layers has a forward hook (synthesis
    reads the BatchNorm inputs, a user may watch a layer) the network runs as it is.
    """

    def __init__(
        self,
        model: nn.Module,
        *,
        class_names: Sequence[str],
        image_size: int,
        mean: Sequence[float],
        std: Sequence[float],
        library: str = "module",
        name_or_path: str | None = None,
        revision: str | None = None,
    ):
        super().__init__()
        if len(mean) != len(std):
            raise ValueError(f"mean and std need one value per channel; got mean={list(mean)}, std={list(std)}")
        if any(v <= 0 for v in std):
            raise ValueError(f"std must be positive, got {list(std)}")
        if library not in LIBRARIES:
            raise ValueError(f"library must be one of {LIBRARIES}, got {library!r}")
        self.model = model
        self.class_names = [str(name) for name in class_names]
        self.image_size = int(image_size)
        self.library = library
        self.name_or_path = name_or_path
        self.revision = revision
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1), persistent=False)
        self.requires_grad_(False)
        self.eval()
        self._folded: dict[str, nn.Module | None] = {}  # the folded twin (or None: none), under "network"

    @property
    def num_channels(self) -> int:
        return self.mean.shape[1]

    @property
    def num_labels(self) -> int:
        return len(self.class_names)

    def train(self, mode: bool = True) -> FrozenClassifier:
        # Frozen models stay in eval mode even inside a module put in training mode, so BatchNorm keeps its
        # running statistics (the research code's target wrapper got this wrong).
        return super().train(False)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        if pixel_values.ndim != 4:
            raise ValueError(
                f"expected a batch of images (batch, channels, height, width) in [0, 1], got shape "
                f"{tuple(pixel_values.shape)}"
            )
        pixel_values = match_channels(pixel_values, self.num_channels)
        x = (pixel_values - self.mean) / self.std
        folded = None if self._watched() else self._folded_network(x)
        output = self.model(x) if folded is None else folded(x.contiguous(memory_format=torch.channels_last))
        return logits_of(output)

    def _watched(self) -> bool:
        return any(m._forward_hooks or m._forward_pre_hooks for m in self.model.modules())

    def _folded_network(self, example: torch.Tensor) -> nn.Module | None:
        if "network" not in self._folded:
            self._folded["network"] = folded_network(self.model, example[:8].detach())
        return self._folded["network"]

    def _apply(self, fn, recurse=True):
        self._folded = {}  # moved or cast: the twin is built again, from the moved network, at the next call
        return super()._apply(fn, recurse)

    def extra_repr(self) -> str:
        return (
            f"library={self.library!r}, name_or_path={self.name_or_path!r}, num_labels={self.num_labels}, "
            f"image_size={self.image_size}, num_channels={self.num_channels}"
        )


def load_classifier(
    model_or_name: nn.Module | str | os.PathLike,
    *,
    revision: str | None = None,
    library: str | None = None,
    class_names: Sequence[str] | None = None,
    image_size: int | None = None,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    templates: Sequence[str] | None = None,
    class_vectors: torch.Tensor | None = None,
    token: str | bool | None = None,
    cache_dir: str | os.PathLike | None = None,
    local_files_only: bool = False,
    force_download: bool = False,
) -> FrozenClassifier:
    """Load a frozen, eval-mode classifier with its metadata.

    Args:
        model_or_name: a Hub repo id or a local folder (transformers or timm layout; ``hf-hub:`` forces timm;
            a CLIP-family model becomes a zero-shot classifier over ``class_names``), or an ``nn.Module`` that maps
            normalised images to logits.
        revision: Hub revision (branch, tag or commit); it is resolved to the commit loaded, which the returned
            classifier's ``revision`` records.
        library: ``"transformers"``, ``"timm"`` or ``"clip"`` to skip detection from ``config.json``.
        class_names, image_size, mean, std: the model's preprocessing and labels. Required for an ``nn.Module``
            (class names may be omitted there only if ``image_size`` lets a dry run count the classes); for Hub
            models they override what the model's own files say.
        templates: prompt templates (``"a photo of a {}."``) for a CLIP-family model's class text features.
        class_vectors: a CLIP-family model's stored class vectors (``kiop_hf.clip.load_class_vectors``), which
            skip the text encoder.
        token, cache_dir, local_files_only, force_download: as for ``huggingface_hub.hf_hub_download``, for every
            file the model is read from (a private repo, another cache, no network, a fresh download).
    """
    if isinstance(model_or_name, FrozenClassifier):
        return model_or_name
    if isinstance(model_or_name, nn.Module):
        return _wrap_module(model_or_name, class_names, image_size, mean, std)
    name = _recorded_name(os.fspath(model_or_name))
    hub = {
        "token": token,
        "cache_dir": cache_dir,
        "local_files_only": local_files_only,
        "force_download": force_download,
    }
    if not os.path.isdir(name.removeprefix(_TIMM_PREFIX)):
        revision = _pin_revision(name.removeprefix(_TIMM_PREFIX), revision, hub)
    library = library or _detect_library(name, revision, hub)
    if library == "clip":
        model, found = load_zero_shot(name, revision, class_names, templates, class_vectors, hub)
    elif library in ("transformers", "timm"):
        model, found = (_load_transformers if library == "transformers" else _load_timm)(name, revision, hub)
    else:
        raise ValueError(f"library must be 'transformers', 'timm' or 'clip' for a named model, got {library!r}")
    overrides = {"class_names": class_names, "image_size": image_size, "mean": mean, "std": std}
    found.update({key: value for key, value in overrides.items() if value is not None})
    unstated = [key for key in ("image_size", "mean", "std") if key not in found]
    if unstated:
        raise ValueError(f"{name} does not state its {', '.join(unstated)} (it has no image processor); pass them")
    return FrozenClassifier(model, library=library, name_or_path=name, revision=revision, **found)


def _recorded_name(name: str) -> str:
    """A local folder as an absolute path, which no Hub id can be mistaken for (a prompt records it and may be
    loaded from another working directory); a missing folder is an error here, not a Hub lookup of its name."""
    prefix = _TIMM_PREFIX if name.startswith(_TIMM_PREFIX) else ""
    path = os.path.expanduser(name.removeprefix(prefix))
    if os.path.isdir(path):
        return prefix + os.path.abspath(path)
    if os.path.isabs(path) or path.startswith((".", "~")) or path.count("/") > 1 or "\\" in path:
        raise FileNotFoundError(f"no such folder: {path} (a model is a local folder or a Hub id 'namespace/name')")
    return name


def _wrap_module(model, class_names, image_size, mean, std) -> FrozenClassifier:
    if mean is None or std is None or image_size is None:
        raise ValueError(
            "a plain nn.Module needs its preprocessing stated: pass image_size, mean and std (one value per input "
            "channel), and class_names"
        )
    if class_names is None:
        was_training = model.training
        model.eval()
        with torch.no_grad():
            logits = model(torch.zeros(1, len(mean), image_size, image_size))
        model.train(was_training)
        class_names = [
            str(i) for i in range((logits if isinstance(logits, torch.Tensor) else logits.logits).shape[-1])
        ]
    return FrozenClassifier(model, class_names=class_names, image_size=image_size, mean=mean, std=std)


# What a caller may pass through to every Hub download of a prompt, its target and its class vectors.
HUB_OPTIONS = ("token", "cache_dir", "local_files_only", "force_download")


def _pin_revision(repo_id: str, revision: str | None, hub: dict) -> str:
    """The commit a Hub revision (branch, tag or commit; default main) points to, so a prompt records exactly
    which target weights it was trained on."""
    offline = constants.HF_HUB_OFFLINE or hub["local_files_only"]
    if offline or (revision is not None and re.fullmatch(r"[0-9a-f]{40}", revision)):
        return revision  # already a commit, or no Hub to ask (the cache serves the given revision)
    try:
        return HfApi(token=hub["token"]).model_info(repo_id, revision=revision).sha
    except GatedRepoError as error:
        raise OSError(f"the model repo {repo_id!r} is gated: request access on the Hub and log in") from error
    except (RepositoryNotFoundError, RevisionNotFoundError) as error:
        raise OSError(f"could not find the model repo {repo_id!r} (revision {revision!r}) on the Hub") from error
    except Exception as error:
        if not any(cls.__name__ == "TransportError" for cls in type(error).__mro__):  # httpx's network errors
            raise
        raise OSError(
            f"could not reach the Hub at {constants.ENDPOINT} to resolve {repo_id!r} ({error}); check the network, "
            "or set HF_HUB_OFFLINE=1 to load it from the local cache"
        ) from error


def _read_config(name: str, revision: str | None, hub: dict) -> dict:
    """``config.json`` of a local folder or Hub repo, with a clear error when it is missing."""
    if os.path.isdir(name):
        path = Path(name) / "config.json"
        if not path.is_file():
            raise FileNotFoundError(f"{name} has no config.json; expected a transformers or timm model folder")
    else:
        try:
            path = hf_hub_download(name, "config.json", revision=revision, **hub)
        except (RepositoryNotFoundError, RevisionNotFoundError) as error:
            raise OSError(f"could not find the model repo {name!r} (revision {revision!r}) on the Hub") from error
        except EntryNotFoundError as error:
            raise OSError(f"the repo {name!r} has no config.json; expected a transformers or timm model") from error
    return json.loads(Path(path).read_text())


def _detect_library(name: str, revision: str | None, hub: dict) -> str:
    if name.startswith(_TIMM_PREFIX):
        return "timm"
    config = _read_config(name, revision, hub)
    if "architecture" in config and "model_type" not in config:
        return "timm"
    if is_clip_config(config):
        return "clip"
    if "model_type" in config:
        return "transformers"
    raise ValueError(f"cannot tell whether {name!r} is a transformers or a timm model from its config.json")


def _square(size, what: str) -> int:
    height, width = size
    if height != width:
        raise ValueError(f"{what} has a non-square input size {height}x{width}; kiop_hf prompts square images")
    return int(height)


def _load_transformers(name: str, revision: str | None, hub: dict) -> tuple[nn.Module, dict]:
    from transformers import AutoImageProcessor, AutoModelForImageClassification

    model = AutoModelForImageClassification.from_pretrained(name, revision=revision, use_safetensors=True, **hub)
    config = model.config
    found = {"class_names": [config.id2label[i] for i in range(config.num_labels)]}
    try:
        processor = AutoImageProcessor.from_pretrained(name, revision=revision, **hub)
    except OSError:
        processor = None
    if processor is not None:
        found["mean"], found["std"] = list(processor.image_mean), list(processor.image_std)
        size = processor.size
        found["image_size"] = size.get("shortest_edge") or _square((size["height"], size["width"]), name)
    elif isinstance(getattr(config, "image_size", None), int):
        found["image_size"] = config.image_size
    return model, found


def _load_timm(name: str, revision: str | None, hub: dict) -> tuple[nn.Module, dict]:
    import timm

    repo_id = name.removeprefix(_TIMM_PREFIX)
    folder = repo_id
    if not os.path.isdir(repo_id):  # the repo's config and safetensors weights, fetched with the caller's options
        try:
            hf_hub_download(repo_id, "config.json", revision=revision, **hub)
            folder = os.path.dirname(hf_hub_download(repo_id, "model.safetensors", revision=revision, **hub))
        except EntryNotFoundError as error:
            raise OSError(f"{repo_id} has no model.safetensors; kiop_hf only loads safetensors weights") from error
    elif not (Path(repo_id) / "model.safetensors").is_file():
        raise FileNotFoundError(f"{repo_id} has no model.safetensors; kiop_hf only loads safetensors weights")
    model = timm.create_model(f"local-dir:{folder}", pretrained=True)  # never a pickled checkpoint
    cfg = model.pretrained_cfg
    num_classes = model.num_classes
    return model, {
        "class_names": list(cfg.get("label_names") or [str(i) for i in range(num_classes)]),
        "image_size": _square(cfg["input_size"][1:], repo_id),
        "mean": list(cfg["mean"]),
        "std": list(cfg["std"]),
    }


# The fields of a plain-module source on the command line or in a config file (``module_classifier``).
MODULE_SPEC_FIELDS = {
    "module": "the factory that builds the network, as 'package.module:callable' (imported from your environment)",
    "weights": "its state dict as a .safetensors file",
    "image_size": "the side of the images it reads",
    "mean": "its normalisation mean, one value per channel",
    "std": "its normalisation std, one value per channel",
    "class_names": "its class names (optional: counted from one forward pass if left out)",
    "kwargs": "keyword arguments for the factory (optional)",
}


def module_classifier(spec: dict, name: str = "source") -> FrozenClassifier:
    """A plain ``nn.Module`` classifier named by fields (``MODULE_SPEC_FIELDS``): the factory is imported and
    called, the weights are read with safetensors (never unpickled) and must match the network exactly.

    The factory is code of the caller's own environment, named by the caller (as a script given to ``accelerate
    launch``); a prompt or a Hub repo never names one.
    """
    import importlib

    from safetensors.torch import load_file

    where = f"the spec of {name!r}"
    if not isinstance(spec, dict):
        raise TypeError(f"{where} must be an object of fields {sorted(MODULE_SPEC_FIELDS)}, got {spec!r}")
    unknown = sorted(set(spec) - set(MODULE_SPEC_FIELDS))
    missing = sorted({"module", "weights", "image_size", "mean", "std"} - set(spec))
    if unknown or missing:
        raise ValueError(
            f"{where}: unknown fields {unknown}, missing fields {missing}; a plain-module source takes "
            + "; ".join(f"{key}: {text}" for key, text in MODULE_SPEC_FIELDS.items())
        )
    module_name, _, attribute = str(spec["module"]).partition(":")
    if not module_name or not attribute:
        raise ValueError(f"{where}: module must be 'package.module:callable', got {spec['module']!r}")
    try:
        factory = getattr(importlib.import_module(module_name), attribute)
    except (ImportError, AttributeError) as error:
        raise ValueError(f"{where}: cannot import {spec['module']!r} ({error})") from error
    kwargs = spec.get("kwargs") or {}
    if not isinstance(kwargs, dict):
        raise TypeError(f"{where}: kwargs must be an object, got {kwargs!r}")
    network = factory(**kwargs)
    if not isinstance(network, nn.Module):
        raise TypeError(f"{where}: {spec['module']!r} returned {type(network).__name__}, not a torch.nn.Module")
    weights = Path(spec["weights"])
    if weights.suffix != ".safetensors" or not weights.is_file():
        raise ValueError(f"{where}: weights must be an existing .safetensors file, got {str(weights)!r}")
    try:
        network.load_state_dict(load_file(weights), strict=True)
    except RuntimeError as error:
        raise ValueError(f"{where}: {weights} does not fit the network {spec['module']!r} ({error})") from error
    return load_classifier(
        network.eval(),
        class_names=spec.get("class_names"),
        image_size=spec["image_size"],
        mean=spec["mean"],
        std=spec["std"],
    )
