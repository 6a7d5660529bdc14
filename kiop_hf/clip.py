"""CLIP-family models as zero-shot classifiers (the PromptKD teachers).

The class text features are computed once, from class names and prompt templates, and stored as a fixed
classifier head (the *class vectors*); from then on only the image encoder runs, with the model's logit scale.
A prompt that needs a CLIP model stores its class vectors beside its weights (``class_vectors.safetensors``), so
using the prompt later never runs the text encoder again.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn

DEFAULT_TEMPLATES = ("a photo of a {}.",)
CLASS_VECTORS_FILE = "class_vectors.safetensors"


def is_clip_config(config: dict) -> bool:
    """A dual-encoder (CLIP, SigLIP, ...) transformers config: one text tower and one vision tower."""
    return "text_config" in config and "vision_config" in config


def _tensor(output) -> torch.Tensor:
    # transformers >= 5 returns a model output whose pooler_output holds the projected features
    return output if isinstance(output, torch.Tensor) else output.pooler_output


class ZeroShotClassifier(nn.Module):
    """The image tower of a CLIP-family model over a fixed head of L2-normalised class text features."""

    def __init__(self, model: nn.Module, class_vectors: torch.Tensor, logit_scale: float, logit_bias: float = 0.0):
        super().__init__()
        self.model = model
        self.register_buffer("class_vectors", class_vectors.float())
        self.logit_scale = float(logit_scale)
        self.logit_bias = float(logit_bias)

    def image_features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """Normalised image embeddings; position embeddings are interpolated for canvases of other sizes."""
        output = self.model.get_image_features(pixel_values=pixel_values, interpolate_pos_encoding=True)
        return F.normalize(_tensor(output), dim=-1)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.logit_scale * self.image_features(pixel_values) @ self.class_vectors.T + self.logit_bias


@torch.no_grad()
def class_text_vectors(
    model: nn.Module, tokenizer, class_names: Sequence[str], templates: Sequence[str]
) -> torch.Tensor:
    """(classes, dim) class vectors: each class's normalised text features averaged over templates, renormalised."""
    # SigLIP-family text towers were trained on max-length padding and pool the last token
    padding = "max_length" if model.config.model_type.startswith("siglip") else True
    vectors = []
    for name in class_names:
        texts = [template.format(name) for template in templates]
        tokens = tokenizer(texts, padding=padding, truncation=True, return_tensors="pt")
        features = F.normalize(_tensor(model.get_text_features(**tokens)), dim=-1)
        vectors.append(F.normalize(features.mean(0), dim=-1))
    return torch.stack(vectors)


def load_zero_shot(
    name: str,
    revision: str | None,
    class_names: Sequence[str] | None,
    templates: Sequence[str] | None = None,
    class_vectors: torch.Tensor | None = None,
    hub: dict | None = None,
) -> tuple[ZeroShotClassifier, dict]:
    """A CLIP-family model id or folder as a zero-shot classifier over ``class_names``.

    With ``class_vectors`` (stored earlier) the text encoder and tokenizer are not touched. ``hub`` holds
    ``hf_hub_download`` options (token, cache_dir, local_files_only) for every file read.
    """
    hub = hub or {}
    from transformers import AutoImageProcessor, AutoModel, AutoTokenizer

    if not class_names:
        raise ValueError(
            f"{name} is a CLIP-family model, which classifies zero-shot: pass class_names= (and templates=)"
        )
    model = AutoModel.from_pretrained(name, revision=revision, use_safetensors=True, **hub).eval()
    if class_vectors is None:
        tokenizer = AutoTokenizer.from_pretrained(name, revision=revision, **hub)
        class_vectors = class_text_vectors(model, tokenizer, class_names, templates or DEFAULT_TEMPLATES)
    elif class_vectors.shape[0] != len(class_names):
        raise ValueError(
            f"{len(class_names)} class names but {class_vectors.shape[0]} stored class vectors for {name}"
        )
    if getattr(model, "text_model", None) is not None:
        model.text_model = None  # from here on only the image tower runs
    processor = AutoImageProcessor.from_pretrained(name, revision=revision, **hub)
    size = getattr(processor, "crop_size", None) or processor.size
    bias = getattr(model, "logit_bias", None)
    classifier = ZeroShotClassifier(
        model, class_vectors, model.logit_scale.exp().item(), 0.0 if bias is None else bias.item()
    )
    found = {
        "class_names": list(class_names),
        "image_size": size.get("height") or size.get("shortest_edge"),
        "mean": list(processor.image_mean),
        "std": list(processor.image_std),
    }
    return classifier, found


def save_class_vectors(folder: str | os.PathLike, classifiers: dict[str, nn.Module]) -> None:
    """Store the class vectors of every zero-shot classifier among ``classifiers`` (task name -> classifier)."""
    vectors = {
        task: classifier.model.class_vectors.contiguous()
        for task, classifier in classifiers.items()
        if isinstance(getattr(classifier, "model", None), ZeroShotClassifier)
    }
    if vectors:
        save_file(vectors, Path(folder) / CLASS_VECTORS_FILE)


def load_class_vectors(
    prompt_name_or_path: str | os.PathLike, revision: str | None = None, **hub_kwargs
) -> dict[str, torch.Tensor]:
    """The class vectors a prompt stored for its CLIP-family models, by task name (``"target"`` for the target);
    ``hub_kwargs`` (token, cache_dir, local_files_only, ...) go to ``hf_hub_download``."""
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError

    name = os.fspath(prompt_name_or_path)
    if os.path.isdir(name):
        path = Path(name) / CLASS_VECTORS_FILE
        if not path.is_file():
            raise FileNotFoundError(f"{name} has no {CLASS_VECTORS_FILE}; its CLIP models' class vectors are missing")
    else:
        try:
            path = hf_hub_download(name, CLASS_VECTORS_FILE, revision=revision, **hub_kwargs)
        except EntryNotFoundError as error:
            raise OSError(f"{name} has no {CLASS_VECTORS_FILE}; its CLIP models' class vectors are missing") from error
    return load_file(path)
