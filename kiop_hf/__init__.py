"""kiop_hf: encapsulate the knowledge of frozen classifiers in one visual prompt around another (KiOP)."""

from transformers import AutoConfig, AutoImageProcessor, AutoModel, AutoModelForImageClassification

from .classifiers import FrozenClassifier, load_classifier
from .configuration_kiop import KiOPPromptConfig
from .image_classification import KiOPForImageClassification
from .image_processing_kiop import KiOPImageProcessor
from .label_mapping import random_label_maps
from .modeling_kiop import KiOPVisualPrompt
from .prompted_model import KiOPModel
from .train_job import KiOPScriptArguments
from .trainer import KiOPTrainer
from .training_args import KiOPTrainingArguments

__version__ = "0.1.0"

AutoConfig.register(KiOPPromptConfig.model_type, KiOPPromptConfig, exist_ok=True)
AutoModel.register(KiOPPromptConfig, KiOPVisualPrompt, exist_ok=True)
AutoModelForImageClassification.register(KiOPPromptConfig, KiOPForImageClassification, exist_ok=True)
AutoImageProcessor.register(KiOPPromptConfig, slow_image_processor_class=KiOPImageProcessor, exist_ok=True)

from . import pipelines  # noqa: E402, F401  registers "kiop-image-classification" with transformers' pipeline registry

__all__ = [
    "FrozenClassifier",
    "KiOPForImageClassification",
    "KiOPImageProcessor",
    "KiOPModel",
    "KiOPPromptConfig",
    "KiOPScriptArguments",
    "KiOPTrainer",
    "KiOPTrainingArguments",
    "KiOPVisualPrompt",
    "load_classifier",
    "random_label_maps",
]
