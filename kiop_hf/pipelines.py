"""Image classification through a KiOP prompt, as a transformers pipeline.

``import kiop_hf`` registers the ``"kiop-image-classification"`` task with transformers' pipeline registry, so

    classifier = pipeline("kiop-image-classification", model="user/fashion-on-letters")
    classifier(["shirt.png", image], task="fashion", top_k=3)

loads the prompt, the target its config names and the prompt's image processor, and returns, per image, the top
``[{"label": ..., "score": ...}]`` of the chosen task with its class names. The standard ``"image-classification"``
task loads a prompt too (``KiOPForImageClassification``), but answers one task fixed at loading; this one picks
the task per call and serves every prompt loaded on the target.
"""

from __future__ import annotations

import torch
from transformers import Pipeline
from transformers.image_utils import load_image
from transformers.pipelines import PIPELINE_REGISTRY

from .image_processing_kiop import KiOPImageProcessor
from .prompted_model import KiOPModel

PIPELINE_TASK = "kiop-image-classification"


class KiOPImageClassificationPipeline(Pipeline):
    """Classify images with one of a prompt's tasks (``task=``: a source task, ``"target"`` for the target's own,
    or ``"prompt_name/task"`` when several prompts are loaded); ``top_k`` results per image, best first."""

    _load_processor = False
    _load_image_processor = False  # each prompt's processor comes from its config (older repos have no file)
    _load_feature_extractor = False
    _load_tokenizer = False

    def __init__(self, model: KiOPModel, *args, image_processor=None, **kwargs):
        # each prompt's processor comes from its config; this one (the active prompt's) lets transformers batch
        super().__init__(
            model,
            *args,
            image_processor=image_processor or KiOPImageProcessor.from_prompt_config(model.config),
            **kwargs,
        )
        self._processors = {model.active_prompt: self.image_processor}

    def _sanitize_parameters(self, top_k: int | None = None, task: str | None = None, timeout: float | None = None):
        forward = {"task": task} if task is not None else {}
        preprocess = forward | ({"timeout": timeout} if timeout is not None else {})
        postprocess = forward | ({"top_k": top_k} if top_k is not None else {})
        return preprocess, forward, postprocess

    def preprocess(self, image, task: str | None = None, timeout: float | None = None):
        if isinstance(image, str):  # a path or URL, as transformers' image pipelines take
            image = load_image(image, timeout=timeout)
        name, _ = self.model.resolve_task(task)
        if name not in self._processors:  # one per prompt, built on its first image
            self._processors[name] = KiOPImageProcessor.from_prompt_config(self.model.prompts[name].config)
        return self._processors[name](image, return_tensors="pt", num_channels=self.model.input_channels(task))

    def _forward(self, model_inputs, task: str | None = None):
        return {"logits": self.model(model_inputs["pixel_values"], task=task)}

    def postprocess(self, model_outputs, task: str | None = None, top_k: int = 5):
        names = self.model.class_names(task)
        scores = model_outputs["logits"][0].float().softmax(-1)
        best = torch.topk(scores, min(top_k, len(names)))
        return [{"label": names[i], "score": score} for score, i in zip(best.values.tolist(), best.indices.tolist())]


PIPELINE_REGISTRY.register_pipeline(PIPELINE_TASK, pipeline_class=KiOPImageClassificationPipeline, pt_model=KiOPModel)
