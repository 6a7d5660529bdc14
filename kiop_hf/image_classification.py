"""KiOPForImageClassification: a prompt on its target as a transformers image classifier.

``import kiop_hf`` registers it with ``AutoModelForImageClassification`` for ``KiOPPromptConfig``, so what a
transformers user types first works on a prompt repo or folder:

    classifier = pipeline("image-classification", model="user/fashion-on-letters")   # the prompt, then its target
    classifier("shirt.png")   # [{"label": "Shirt", "score": 0.91}, ...]: the active task's classes

The model answers one task at a time (``task``, a source task by default), and its ``config.id2label`` follows
that task, as the stock pipeline reads the labels there. ``KiOPModel`` underneath keeps serving every task and
mixed batches (``model.kiop``).
"""

from __future__ import annotations

import copy
import os

import torch
import torch.nn.functional as F
from transformers import PreTrainedModel
from transformers.modeling_outputs import ImageClassifierOutput

from .configuration_kiop import KiOPPromptConfig
from .pixels import checked_pixels, match_channels
from .prompted_model import KiOPModel

# what transformers' from_pretrained machinery may pass that a prompt's loading does not take (the auto classes
# and the pipeline add them); a prompt is always fp32 rings over the target's own dtype
_AUTO_KWARGS = ("config", "dtype", "torch_dtype", "_from_auto", "_from_pipeline", "_commit_hash", "device_map")


class KiOPForImageClassification(PreTrainedModel):
    """The prompted target reading one task: ``forward(pixel_values, labels=None)`` -> ``ImageClassifierOutput``.

    Args:
        config: the prompt's config; this model keeps its own copy, whose ``id2label`` names the active task's
            classes.
        kiop: the prompt(s) on their frozen target (``KiOPModel``).
        task: the task answered when ``forward`` is not told one: a source task of the active prompt, ``"target"``
            for the target's own, ``"prompt_name/task"`` for another loaded prompt's. Default: the active prompt's
            first source.
    """

    config_class = KiOPPromptConfig
    base_model_prefix = "kiop"
    main_input_name = "pixel_values"

    def __init__(self, config: KiOPPromptConfig, kiop: KiOPModel | None = None, task: str | None = None):
        if kiop is None:
            raise ValueError(
                "KiOPForImageClassification wraps a prompt on its target: load it with from_pretrained(prompt repo or "
                "folder), or wrap a KiOPModel with KiOPForImageClassification.from_kiop_model(model)"
            )
        super().__init__(copy.deepcopy(config))
        self.kiop = kiop
        self.set_task(task if task is not None else (kiop.config.source_names or [None])[0])

    def _init_weights(self, module):
        """Nothing to initialise: the rings come trained and the target is frozen."""

    @classmethod
    def from_kiop_model(cls, kiop: KiOPModel, task: str | None = None) -> KiOPForImageClassification:
        return cls(kiop.config, kiop, task)

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str | os.PathLike, *model_args, **kwargs):
        """Load the prompt and the target its config names (``KiOPModel.from_pretrained``: ``revision``, ``token``,
        ``cache_dir``, ``local_files_only``, ``target``, ``prompt_name``), answering ``task=``."""
        if kwargs.pop("trust_remote_code", False):
            raise ValueError("kiop_hf runs no code from a repo: trust_remote_code is not supported")
        for key in _AUTO_KWARGS:
            kwargs.pop(key, None)
        task = kwargs.pop("task", None)
        return cls.from_kiop_model(KiOPModel.from_pretrained(pretrained_model_name_or_path, **kwargs), task)

    def set_task(self, task: str | None) -> None:
        """Answer ``task`` from now on; ``config.id2label`` / ``label2id`` become its classes."""
        names = self.kiop.class_names(task)  # refuses an unknown task, with what the prompts serve
        self.task = task
        self.config.id2label = dict(enumerate(names))
        self.config.label2id = {name: index for index, name in enumerate(names)}

    def forward(
        self,
        pixel_values: torch.Tensor,
        labels: torch.Tensor | None = None,
        task: str | None = None,
        return_dict: bool | None = None,
    ) -> ImageClassifierOutput | tuple:
        """Logits of ``task`` (default: the model's ``task``) for pixels in [0, 1], and the cross-entropy against
        ``labels`` (class indices of that task) when given. RGB images for a grayscale source's task are read
        as their luma, as ``KiOPImageProcessor`` does for that task."""
        task = self.task if task is None else task
        pixel_values = match_channels(checked_pixels(pixel_values), self.kiop.input_channels(task))
        logits = self.kiop(pixel_values, task=task)
        loss = None if labels is None else F.cross_entropy(logits.float(), labels.to(logits.device))
        return_dict = self.config.return_dict if return_dict is None else return_dict
        if not return_dict:
            return (logits,) if loss is None else (loss, logits)
        return ImageClassifierOutput(loss=loss, logits=logits)

    def save_pretrained(self, save_directory: str | os.PathLike, **kwargs) -> None:
        """Save the prompt (``KiOPModel.save_pretrained``): a prompt folder loads back as this model or a
        ``KiOPModel``."""
        self.kiop.save_pretrained(save_directory, **kwargs)
