"""The synthesis system: inverting frozen classifiers into in-memory data banks."""

from .generator import Generator
from .synthesizers import (
    SYNTHESIZERS,
    CMISynthesizer,
    DataBank,
    DeepInversionSynthesizer,
    Synthesizer,
    make_synthesizer,
)

__all__ = [
    "SYNTHESIZERS",
    "CMISynthesizer",
    "DataBank",
    "DeepInversionSynthesizer",
    "Generator",
    "Synthesizer",
    "make_synthesizer",
]
