"""Arguments of a KiOP run, in the style of transformers' TrainingArguments and TRL's configs."""

from __future__ import annotations

import math
import numbers
from dataclasses import asdict, dataclass, field

PRESERVATION_MODES = ("BF", "B", "none")
TRANSFER_MODES = ("synthetic", "unlabelled", "mixed")
LABEL_MAPPINGS = ("random", "frequency")
MIXED_PRECISION = (None, "no", "bf16")  # fp16 would need loss scaling of the prompt's gradients
SYNTHESIS_METHODS = ("cmi", "fast", "deepinversion")
RESUME_OVERRIDABLE = ("rounds",)
# (name, smallest value, None allowed)
INTEGERS = (
    ("rounds", 1, False), ("synthesis_steps", 0, False), ("kd_steps", 1, False), ("batch_size", 1, False),
    ("seed", 0, False), ("label_mapping_refresh_rounds", 0, False), ("memory_bank_size", 1, False),
    ("num_negatives", 1, False), ("head_dim", 1, False), ("data_bank_size", 1, True), ("save_every_rounds", 1, False),
    ("save_total_limit", 1, True), ("logging_steps", 1, False), ("eval_limit", 1, True),
)  # fmt: skip
# (name, must be above zero): finite and non-negative
NUMBERS = (
    ("learning_rate", True), ("weight_decay", False), ("temperature", True), ("preservation_weight", False),
    ("synthesis_lr", True), ("bn_weight", False), ("oh_weight", False), ("adv_weight", False), ("cr_weight", False),
    ("cr_temperature", True), ("latent_lr", True), ("meta_step", True), ("bn_momentum", False), ("recent_share", False),
    ("momentum", False),
)  # fmt: skip


def _finite_number(value) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)


@dataclass
class KiOPTrainingArguments:
    """Everything that defines a KiOP run; defaults are the reference schedule of the method (see the docs).

    A run alternates, for ``rounds`` rounds, one synthesis round per inverted model (``synthesis_steps`` generator
    steps) with ``kd_steps`` knowledge-storing steps on the prompt.
    """

    output_dir: str
    # Schedule
    rounds: int = 100
    synthesis_steps: int = 200
    kd_steps: int = 400
    batch_size: int = 128
    seed: int = 0
    # With several processes each rank synthesises its own data; False gives every rank the same data, which then
    # reproduces a 1-process run exactly (a check of a multi-process setup).
    seed_per_process: bool = True
    # Knowledge storing (SGD on the prompt only, cosine decay over all KD steps)
    learning_rate: float = 0.8
    momentum: float = 0.9
    weight_decay: float = 1e-4
    temperature: float = 20.0
    source_weights: dict[str, float] | None = None
    # Where the sources' knowledge is read from: "synthetic" inverts each source (data-free KiOP), "unlabelled"
    # uses real unlabelled images given to the trainer as transfer_images (the PromptKD regime), "mixed" draws
    # half of every batch from each.
    transfer_data: str = "synthetic"
    # How source classes are read from target classes: the model's fixed maps ("random": the paper's), or
    # "frequency": after the first synthesis period each source class takes the free target class that the prompted
    # target most often predicts for its samples (one-to-one, disjoint), refreshed every
    # label_mapping_refresh_rounds rounds if that is above zero.
    label_mapping: str = "random"
    label_mapping_refresh_rounds: int = 0
    # Preservation of the target's own task: "BF" inverts the target (data-free), "B" uses real unlabelled
    # target-domain images passed to the trainer, "none" trains without the term.
    preservation: str = "BF"
    preservation_weight: float = 1.0
    # Synthesis: "cmi" (KiOP's), "fast" (FastDFKD: a meta-learned generator adapted for a few steps per round,
    # cheap enough for many more rounds) or "deepinversion" (pixels optimised directly).
    synthesizer: str = "cmi"
    synthesis_lr: float | None = None
    bn_weight: float = 1.0
    oh_weight: float = 1.0
    adv_weight: float = 0.5
    # Contrastive term weight; None: the method's default (0.8 for cmi, 0 for fast, where it is optional).
    cr_weight: float | None = None
    cr_temperature: float = 0.6
    memory_bank_size: int = 40_960
    num_negatives: int = 4_096
    head_dim: int = 256
    reset_generator: bool = True
    # fast only: learning rate of the latent codes, Reptile step of the meta weights towards the adapted ones,
    # momentum of the averaged batch statistics in the BN prior.
    latent_lr: float = 0.05
    meta_step: float = 0.5
    bn_momentum: float = 0.9
    # Data banks: at most this many images per inverted model (None: all; the newest replace the oldest), and the
    # share of each knowledge-storing batch drawn from the newest synthetic batch (the rest from the whole bank).
    data_bank_size: int | None = None
    recent_share: float = 0.0
    # Checkpoints, logging, hardware
    save_every_rounds: int = 1
    save_total_limit: int | None = 2
    logging_steps: int = 50
    report_to: list[str] = field(default_factory=list)
    use_cpu: bool = False
    # "no" or "bf16": autocast for the frozen models' passes and the generator (the prompt's parameters
    # and optimizer stay fp32); None takes accelerate's setting (`accelerate launch --mixed_precision bf16`).
    mixed_precision: str | None = None
    # Arguments a resumed run may change against its checkpoint (every other one must match): only "rounds", to
    # extend or shorten a run, whose cosine learning-rate schedule then stretches to the new length.
    resume_overrides: list[str] = field(default_factory=list)
    # Evaluation (on the trainer's eval_sets at the end of training) and publishing, as in transformers
    eval_limit: int | None = None
    push_to_hub: bool = False
    hub_model_id: str | None = None  # default: the name of output_dir
    hub_private_repo: bool | None = None
    hub_token: str | None = None

    def __post_init__(self):
        """Refuse a bad argument here, with its name and what it takes, rather than deep inside a long run."""
        for name, allowed in (("preservation", PRESERVATION_MODES), ("label_mapping", LABEL_MAPPINGS),
                              ("transfer_data", TRANSFER_MODES), ("mixed_precision", MIXED_PRECISION),
                              ("synthesizer", SYNTHESIS_METHODS)):  # fmt: skip
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name} must be one of {allowed}, got {getattr(self, name)!r}")
        for name, low, optional in INTEGERS:
            value = getattr(self, name)
            if value is None and optional:
                continue
            if not isinstance(value, numbers.Integral) or isinstance(value, bool) or value < low:
                raise ValueError(f"{name} must be an integer >= {low}{' or None' if optional else ''}, got {value!r}")
            setattr(self, name, int(value))  # NumPy integers become plain ints (JSON, checkpoints)
        for name, positive in NUMBERS:
            value = getattr(self, name)
            if value is None and name in ("cr_weight", "synthesis_lr"):
                continue
            if not _finite_number(value) or value < 0 or (positive and value == 0):
                raise ValueError(f"{name} must be a finite number {'> 0' if positive else '>= 0'}, got {value!r}")
        if not 0 <= self.recent_share <= 1:
            raise ValueError(f"recent_share must be between 0 and 1, got {self.recent_share}")
        if not 0 <= self.momentum < 1:
            raise ValueError(f"momentum must be in [0, 1), got {self.momentum}")
        synthesises = self.transfer_data != "unlabelled" or self.preservation == "BF"
        if synthesises and self.synthesis_steps < 1:
            raise ValueError(f"synthesis_steps must be at least 1 when a model is inverted, got {self.synthesis_steps}")
        if not isinstance(self.resume_overrides, list) or not set(self.resume_overrides) <= set(RESUME_OVERRIDABLE):
            raise ValueError(f"resume_overrides may name only {list(RESUME_OVERRIDABLE)}, got {self.resume_overrides}")
        for task, weight in (self.source_weights or {}).items():
            if not _finite_number(weight) or weight < 0:
                raise ValueError(f"source_weights[{task!r}] must be a finite number >= 0, got {weight!r}")

    def synthesizer_kwargs(self) -> dict:
        """The arguments the chosen synthesizer's constructor takes, under the same names (None: its default)."""
        from .synthesis import synthesizer_parameters

        return {name: getattr(self, name) for name in sorted(synthesizer_parameters(self.synthesizer))
                if hasattr(self, name) and getattr(self, name) is not None}  # fmt: skip

    def to_dict(self) -> dict:
        """The arguments without secrets (the Hub token), for trackers and logs."""
        return {k: v for k, v in asdict(self).items() if k != "hub_token"}
