"""Arguments of a KiOP run, in the style of transformers' TrainingArguments and TRL's configs.

Every field carries its help text, so ``kiop-hf train --help`` (built by ``transformers.HfArgumentParser``) lists
each one as a flag, and a YAML or JSON file with the same keys configures the same run.
"""

from __future__ import annotations

import functools
import json
import math
import numbers
import typing
from dataclasses import asdict, dataclass, field
from typing import Literal

from .synthesis import describe_method_defaults, method_defaults

Preservation = Literal["BF", "B", "none"]
TransferData = Literal["synthetic", "unlabelled", "mixed"]
LabelMapping = Literal["random", "frequency"]
SynthesisMethod = Literal["cmi", "fast", "deepinversion"]
KDMix = Literal["none", "mixup", "cutmix"]
MixedPrecision = Literal["no", "bf16"]  # fp16 would need loss scaling of the prompt's gradients
RESUME_OVERRIDABLE = ("rounds",)
# (name, smallest value, None allowed)
INTEGERS = (
    ("rounds", 1, False),
    ("synthesis_steps", 0, True),
    ("kd_steps", 1, False),
    ("batch_size", 1, False),
    ("seed", 0, False),
    ("label_mapping_refresh_rounds", 0, False),
    ("memory_bank_size", 1, False),
    ("num_negatives", 1, False),
    ("head_dim", 1, False),
    ("data_bank_size", 1, True),
    ("save_every_rounds", 1, False),
    ("save_total_limit", 1, True),
    ("logging_steps", 1, False),
    ("kd_shift", 0, False),
    ("eval_limit", 1, True),
)
# (name, must be above zero, None allowed): finite and non-negative
NUMBERS = (
    ("learning_rate", True, False),
    ("momentum", False, False),
    ("weight_decay", False, False),
    ("temperature", True, False),
    ("preservation_weight", False, False),
    ("synthesis_lr", True, True),
    ("bn_weight", False, False),
    ("oh_weight", False, False),
    ("adv_weight", False, False),
    ("cr_weight", False, True),
    ("cr_temperature", True, False),
    ("latent_lr", True, False),
    ("meta_step", True, False),
    ("bn_momentum", False, False),
    ("recent_share", False, False),
    ("bank_min_confidence", False, False),
    ("kd_mix_prob", False, False),
    ("kd_mix_alpha", True, False),
)


def _finite_number(value) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)


def field_help(text: str, **argparse_options) -> dict:
    """A field's metadata for ``HfArgumentParser``: its help text, and argparse options where the type alone
    does not say how the flag reads."""
    return {"help": text, **argparse_options}


@dataclass
class KiOPTrainingArguments:
    """Everything that defines a KiOP run; defaults are the reference schedule of the method (see the docs).

    A run alternates, for ``rounds`` rounds, one synthesis round per inverted model (``synthesis_steps`` generator
    steps) with ``kd_steps`` knowledge-storing steps on the prompt. Synthesizers take these fields under the same
    names (``synthesizer_kwargs``).
    """

    output_dir: str = field(
        default="outputs/kiop-prompt", metadata=field_help("Where the prompt, its card, results and checkpoints go.")
    )
    # Schedule
    rounds: int = field(default=100, metadata=field_help("Rounds of synthesis followed by knowledge storing."))
    synthesis_steps: int | None = field(
        default=None,
        metadata=field_help(
            "Synthesis steps per round and inverted model (None: the method's own: "
            f"{describe_method_defaults('synthesis_steps')})."
        ),
    )
    kd_steps: int = field(default=400, metadata=field_help("Knowledge-storing (prompt SGD) steps per round."))
    batch_size: int = field(
        default=128, metadata=field_help("Images per synthesis batch and per knowledge-storing batch.")
    )
    seed: int = field(default=0, metadata=field_help("Random seed of the prompt, the synthesis and the sampling."))
    seed_per_process: bool = field(
        default=True,
        metadata=field_help(
            "With several processes each rank synthesises its own data; False gives every rank the same data, "
            "which then reproduces a 1-process run exactly (a check of a multi-process setup)."
        ),
    )
    # Knowledge storing
    learning_rate: float = field(default=0.8, metadata=field_help("SGD learning rate of the prompt (cosine decay)."))
    momentum: float = field(default=0.9, metadata=field_help("SGD momentum of the prompt, in [0, 1)."))
    weight_decay: float = field(default=1e-4, metadata=field_help("SGD weight decay of the prompt."))
    temperature: float = field(default=20.0, metadata=field_help("Distillation temperature T of the T^2 KL terms."))
    source_weights: dict[str, float] | str | None = field(
        default=None,
        metadata=field_help(
            "Weight of each source's term by task name (JSON on the command line: '{\"fashion\": 2}')."
        ),
    )
    transfer_data: TransferData = field(
        default="synthetic",
        metadata=field_help(
            'Where the sources\' knowledge is read from: "synthetic" inverts each source (data-free KiOP), '
            '"unlabelled" uses real unlabelled transfer images (the PromptKD regime), "mixed" draws half of every '
            "batch from each."
        ),
    )
    kd_shift: int = field(
        default=0,
        metadata=field_help(
            "Knowledge storing reads each source image moved by up to this many pixels (0: as it is); the source "
            "and the prompted target read the same moved image."
        ),
    )
    kd_flip: bool = field(
        default=False,
        metadata=field_help(
            "Knowledge storing mirrors half of the source images left-right (only for tasks whose classes survive "
            "a mirror: garments yes, digits and letters no)."
        ),
    )
    kd_mix: KDMix = field(
        default="none",
        metadata=field_help(
            'Knowledge storing mixes pairs of source images: "mixup" blends them, "cutmix" pastes a box of one '
            "into the other; the source is asked about the very mixed image (a consistent teacher)."
        ),
    )
    kd_mix_prob: float = field(
        default=0.5, metadata=field_help("Share of the knowledge-storing source images that kd_mix mixes, in [0, 1].")
    )
    kd_mix_alpha: float = field(
        default=1.0, metadata=field_help("kd_mix draws the mixing weight from Beta(alpha, alpha).")
    )
    label_mapping: LabelMapping = field(
        default="random",
        metadata=field_help(
            "How source classes are read from target classes: the model's fixed maps (\"random\", the paper's), or "
            '"frequency": after the first synthesis each source class takes the free target class the prompted '
            "target most often predicts for its samples (one-to-one), refreshed every label_mapping_refresh_rounds."
        ),
    )
    label_mapping_refresh_rounds: int = field(
        default=0, metadata=field_help('Refresh the "frequency" label maps every this many rounds (0: never).')
    )
    preservation: Preservation = field(
        default="BF",
        metadata=field_help(
            'Preservation of the target\'s own task: "BF" inverts the target (data-free), "B" uses real unlabelled '
            'target-domain images, "none" trains without the term.'
        ),
    )
    preservation_weight: float = field(default=1.0, metadata=field_help("Weight of the preservation term."))
    # Synthesis
    synthesizer: SynthesisMethod = field(
        default="cmi",
        metadata=field_help(
            'Synthesis method: "cmi" (KiOP\'s), "fast" (FastDFKD: a meta-learned generator adapted for a few steps '
            'per round, cheap enough for many more rounds) or "deepinversion" (pixels optimised directly).'
        ),
    )
    synthesis_lr: float | None = field(
        default=None,
        metadata=field_help(
            "Adam learning rate of the synthesis (None: the method's own: "
            f"{describe_method_defaults('synthesis_lr')})."
        ),
    )
    bn_weight: float = field(default=1.0, metadata=field_help("Weight of the BatchNorm-statistics prior."))
    oh_weight: float = field(default=1.0, metadata=field_help("Weight of the class (one-hot cross-entropy) term."))
    adv_weight: float = field(default=0.5, metadata=field_help("Weight of the adversarial term against the prompt."))
    cr_weight: float | None = field(
        default=None,
        metadata=field_help(
            "Weight of the contrastive term (None: the method's own: "
            f"{describe_method_defaults('cr_weight')}; deepinversion has no such term)."
        ),
    )
    cr_temperature: float = field(default=0.6, metadata=field_help("Temperature of the contrastive term."))
    memory_bank_size: int = field(default=40_960, metadata=field_help("Feature rows in the contrastive memory bank."))
    num_negatives: int = field(default=4_096, metadata=field_help("Negatives drawn from the memory bank per step."))
    head_dim: int = field(default=256, metadata=field_help("Output size of the contrastive projection head."))
    reset_generator: bool = field(
        default=True, metadata=field_help("cmi: a new generator every round (False: keep it).")
    )
    latent_lr: float = field(default=0.05, metadata=field_help("fast: learning rate of the latent codes."))
    meta_step: float = field(
        default=0.5, metadata=field_help("fast: Reptile step of the meta weights towards the adapted ones, in (0, 1].")
    )
    bn_momentum: float = field(
        default=0.9,
        metadata=field_help("fast: momentum of the batch statistics averaged across rounds in the BN prior."),
    )
    data_bank_size: int | None = field(
        default=None,
        metadata=field_help("At most this many images per inverted model (None: all; newest replace oldest)."),
    )
    recent_share: float = field(
        default=0.0,
        metadata=field_help("Share of each knowledge-storing batch drawn from the newest synthetic batch, in [0, 1]."),
    )
    bank_min_confidence: float = field(
        default=0.0,
        metadata=field_help(
            "Keep only the synthetic source images their source classifies with at least this top-1 probability, "
            "in [0, 1] (0: keep all; a round keeps at least its surest image). Off by default: see benchmarks/README."
        ),
    )
    # Checkpoints, logging, hardware
    save_every_rounds: int = field(default=1, metadata=field_help("Write a checkpoint every this many rounds."))
    save_total_limit: int | None = field(
        default=2, metadata=field_help("Keep at most this many checkpoints (None: all).")
    )
    logging_steps: int = field(
        default=50, metadata=field_help("Log the losses every this many knowledge-storing steps.")
    )
    report_to: list[str] = field(
        default_factory=list, metadata=field_help("accelerate trackers to log to (tensorboard, wandb, ...).")
    )
    use_cpu: bool = field(
        default=False, metadata=field_help("Run on CPU even if a GPU is present.", aliases=["--cpu"])
    )
    mixed_precision: MixedPrecision | None = field(
        default=None,
        metadata=field_help(
            '"no" or "bf16": autocast for the synthesis (the generator and the frozen models\' passes in it); '
            "knowledge storing, the prompt's parameters and its optimizer stay fp32 (bf16 there cost accuracy). "
            "None takes accelerate's setting (`accelerate launch --mixed_precision bf16`)."
        ),
    )
    resume_overrides: list[str] = field(
        default_factory=list,
        metadata=field_help(
            'Arguments a resumed run may change against its checkpoint (every other one must match): only "rounds", '
            "to extend or shorten a run, whose cosine learning-rate schedule then stretches to the new length."
        ),
    )
    # Evaluation and publishing, as in transformers
    eval_limit: int | None = field(
        default=None, metadata=field_help("Evaluate on at most this many test images per task.")
    )
    push_to_hub: bool = field(default=False, metadata=field_help("Push the prompt and its card to hub_model_id."))
    hub_model_id: str | None = field(
        default=None, metadata=field_help("Hub repo to push to (default: output_dir's name).")
    )
    hub_private_repo: bool | None = field(
        default=None, metadata=field_help("Create the Hub repo private.", nargs="?", const=True)
    )
    hub_token: str | None = field(default=None, metadata=field_help("Hub token (default: the logged-in one)."))

    def __post_init__(self):
        """Refuse a bad argument here, with its name and what it takes, rather than deep inside a long run."""
        if isinstance(self.source_weights, str):  # from the command line
            self.source_weights = _json_object("source_weights", self.source_weights)
        for name, allowed in _choices(type(self)).items():
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name} must be one of {allowed}, got {getattr(self, name)!r}")
        for name, low, optional in INTEGERS:
            value = getattr(self, name)
            if value is None and optional:
                continue
            if not isinstance(value, numbers.Integral) or isinstance(value, bool) or value < low:
                raise ValueError(f"{name} must be an integer >= {low}{' or None' if optional else ''}, got {value!r}")
            setattr(self, name, int(value))  # NumPy integers become plain ints (JSON, checkpoints)
        for name, positive, optional in NUMBERS:
            value = getattr(self, name)
            if value is None and optional:
                continue
            if not _finite_number(value) or value < 0 or (positive and value == 0):
                raise ValueError(f"{name} must be a finite number {'> 0' if positive else '>= 0'}, got {value!r}")
        if not 0 <= self.bank_min_confidence <= 1:
            raise ValueError(f"bank_min_confidence must be between 0 and 1, got {self.bank_min_confidence}")
        if not 0 <= self.recent_share <= 1:
            raise ValueError(f"recent_share must be between 0 and 1, got {self.recent_share}")
        if not 0 <= self.kd_mix_prob <= 1:
            raise ValueError(f"kd_mix_prob must be between 0 and 1, got {self.kd_mix_prob}")
        if not 0 <= self.momentum < 1:
            raise ValueError(f"momentum must be in [0, 1), got {self.momentum}")
        synthesises = self.transfer_data != "unlabelled" or self.preservation == "BF"
        if synthesises and self.synthesis_settings()["synthesis_steps"] < 1:
            raise ValueError(
                f"synthesis_steps must be at least 1 when a model is inverted, got {self.synthesis_steps}"
            )
        if not isinstance(self.resume_overrides, list) or not set(self.resume_overrides) <= set(RESUME_OVERRIDABLE):
            raise ValueError(f"resume_overrides may name only {list(RESUME_OVERRIDABLE)}, got {self.resume_overrides}")
        for task, weight in (self.source_weights or {}).items():
            if not _finite_number(weight) or weight < 0:
                raise ValueError(f"source_weights[{task!r}] must be a finite number >= 0, got {weight!r}")

    def synthesizer_kwargs(self) -> dict:
        """The arguments the chosen synthesizer's constructor takes, under the same names (None: its default)."""
        names = sorted(method_defaults(self.synthesizer))
        return {name: getattr(self, name) for name in names if getattr(self, name, None) is not None}

    def synthesis_settings(self) -> dict:
        """Every knob of the chosen synthesizer with the value the run uses: the method's own default where the
        argument is None (what the card and results.json report)."""
        return method_defaults(self.synthesizer) | self.synthesizer_kwargs()

    def to_dict(self) -> dict:
        """The arguments without secrets (the Hub token), for trackers and logs."""
        return {k: v for k, v in asdict(self).items() if k != "hub_token"}


@functools.cache
def _choices(cls) -> dict[str, tuple]:
    """The allowed values of every ``Literal``-typed field (None too where the field is optional), once per class."""
    choices = {}
    for name, hint in typing.get_type_hints(cls).items():
        options = typing.get_args(hint)
        if typing.get_origin(hint) is Literal:
            choices[name] = options
        elif any(typing.get_origin(option) is Literal for option in options):  # Literal[...] | None
            literal = next(option for option in options if typing.get_origin(option) is Literal)
            choices[name] = (*typing.get_args(literal), None)
    return choices


def _json_object(name: str, text: str) -> dict:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as error:
        raise ValueError(
            f"{name} must be a JSON object such as '{{\"fashion\": 2}}', got {text!r} ({error})"
        ) from None
    if not isinstance(value, dict):
        raise ValueError(f"{name} must be a JSON object such as '{{\"fashion\": 2}}', got {text!r}")
    return value
