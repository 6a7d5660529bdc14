"""The synthesis system: inverting frozen classifiers into in-memory data banks, one method per file."""

from ..classifiers import FrozenClassifier
from .data_bank import DataBank
from .fast import FastSynthesizer
from .generator import Generator
from .synthesizers import CMISynthesizer, DeepInversionSynthesizer, Synthesizer

SYNTHESIZERS: dict[str, type[Synthesizer]] = {
    "cmi": CMISynthesizer,
    "deepinversion": DeepInversionSynthesizer,
    "fast": FastSynthesizer,
}


def make_synthesizer(method: str, model: FrozenClassifier, **kwargs) -> Synthesizer:
    if method not in SYNTHESIZERS:
        raise ValueError(f"unknown synthesis method {method!r}; choose one of {sorted(SYNTHESIZERS)}")
    return SYNTHESIZERS[method](model, **kwargs)


__all__ = [
    "SYNTHESIZERS",
    "CMISynthesizer",
    "DataBank",
    "DeepInversionSynthesizer",
    "FastSynthesizer",
    "Generator",
    "Synthesizer",
    "make_synthesizer",
]
