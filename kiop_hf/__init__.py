"""kiop_hf: encapsulate the knowledge of frozen classifiers in one visual prompt around another (KiOP)."""

from transformers import AutoConfig, AutoModel

from .classifiers import FrozenClassifier, load_classifier
from .configuration_kiop import KiOPPromptConfig
from .label_mapping import random_label_maps
from .modeling_kiop import KiOPModel, KiOPVisualPrompt

__version__ = "0.1.0"

AutoConfig.register(KiOPPromptConfig.model_type, KiOPPromptConfig, exist_ok=True)
AutoModel.register(KiOPPromptConfig, KiOPVisualPrompt, exist_ok=True)

__all__ = [
    "FrozenClassifier",
    "KiOPModel",
    "KiOPPromptConfig",
    "KiOPVisualPrompt",
    "load_classifier",
    "random_label_maps",
]
