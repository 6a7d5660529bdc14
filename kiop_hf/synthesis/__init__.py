"""The synthesis system: inverting frozen classifiers into in-memory data banks, one method per file."""

import inspect

from ..classifiers import FrozenClassifier
from .base import Synthesizer
from .cmi import CMISynthesizer
from .data_bank import DataBank
from .deepinversion import DeepInversionSynthesizer
from .fast import FastSynthesizer
from .generator import Generator

SYNTHESIZERS: dict[str, type[Synthesizer]] = {
    "cmi": CMISynthesizer,
    "deepinversion": DeepInversionSynthesizer,
    "fast": FastSynthesizer,
}


def _method(method: str) -> type[Synthesizer]:
    if method not in SYNTHESIZERS:
        raise ValueError(f"unknown synthesis method {method!r}; choose one of {sorted(SYNTHESIZERS)}")
    return SYNTHESIZERS[method]


def synthesizer_parameters(method: str) -> set[str]:
    """The keyword arguments a method takes, through its base classes (its knobs' shared names)."""
    method_class, names = _method(method), set()
    for cls in method_class.__mro__:
        if "__init__" in vars(cls) and cls is not object:
            parameters = inspect.signature(cls.__init__).parameters.values()
            names |= {p.name for p in parameters if p.kind is inspect.Parameter.KEYWORD_ONLY}
    return names - method_class.fixed_parameters


def make_synthesizer(method: str, model: FrozenClassifier, **kwargs) -> Synthesizer:
    return _method(method)(model, **kwargs)


__all__ = [
    "SYNTHESIZERS",
    "CMISynthesizer",
    "DataBank",
    "DeepInversionSynthesizer",
    "FastSynthesizer",
    "Generator",
    "Synthesizer",
    "make_synthesizer",
    "synthesizer_parameters",
]
