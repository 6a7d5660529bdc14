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


def method_defaults(method: str) -> dict[str, object]:
    """The keyword arguments a method takes, through its base classes, with the method's own default for each (a
    subclass's default wins over its base's): the one place a "None: the method's own" training argument resolves."""
    method_class, defaults = _method(method), {}
    for cls in reversed(method_class.__mro__):
        if "__init__" in vars(cls) and cls is not object:
            parameters = inspect.signature(cls.__init__).parameters.values()
            defaults |= {p.name: p.default for p in parameters if p.kind is inspect.Parameter.KEYWORD_ONLY}
    return {name: value for name, value in defaults.items() if name not in method_class.fixed_parameters}


def synthesizer_parameters(method: str) -> set[str]:
    """The keyword arguments a method takes (its knobs' shared names)."""
    return set(method_defaults(method))


def describe_method_defaults(name: str) -> str:
    """Each method's own default of one knob, in words, for the help of a training argument."""
    defaults = {method: method_defaults(method) for method in SYNTHESIZERS}
    return ", ".join(f"{method} {values[name]}" for method, values in defaults.items() if name in values)


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
    "describe_method_defaults",
    "make_synthesizer",
    "method_defaults",
    "synthesizer_parameters",
]
