"""kiop_hf beside the reference KiOP code at the reference's own configuration, in one process, interleaved.

The reference is the public research code of the paper (github.com/LiQiiiii/Encapsulating-Knowledge-In-One-Prompt,
`scripts/KiOP_B.sh`): a resnet18 teacher (10 classes, 32 px) inverted by CMI into a resnet18 host (43 classes)
behind rings 32 -> 36 -> 128, batch 128, 4,096 negatives from a 40,960-row memory bank, adv 0.5, bn 1, oh 1,
cr 0.8, cr_T 0.6, generator lr 0.01; knowledge storing with KL at T=20 on the synthetic batch plus the
preservation term on real host-domain images (KiOP-B). Both sides get the same random-weight torchvision resnet18s
(their own copies, so the reference keeps its teacher's parameters as it builds them), the same random
"real" images and the same negatives. Measured, per side, in turn:

- a CMI synthesis step with an empty memory bank and with a warm one (4,096 negatives): the time between two
  generator passes of a round, so a round's set-up and bank writes are not in it;
- a knowledge-storing step: the reference's `train()` for one step (it reads its synthetic images back from the
  PNG files its synthesizer wrote), kiop_hf's `KiOPTrainer.knowledge_storing_step`;
- with `--memory`, the peak memory of a warm-bank synthesis round, each side in a fresh process (CUDA: peak
  allocated bytes; CPU: the growth of the peak resident set over what the process held before).

The reference runs unchanged except where it cannot run on CPU: `KiOP_B.py`'s `train()` moves the real batch with
`.cuda()`; on CPU those two calls are rewritten to `.to(images.device)` when the module is loaded. The edits are
printed and written to the JSON. The reference imports kornia, termcolor and lmdb (`make reference-speed` installs
them and clones the reference into build/).

    python benchmarks/reference_speed.py --reference-dir PATH [--repeats 3] [--memory] [--profile] [--json FILE]
    make reference-speed     # clones the reference into build/, installs its imports, runs the above
"""

from __future__ import annotations

import copy
import importlib.util
import json
import statistics
import subprocess
import sys
import tempfile
import time
import types
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import torch
import torchvision
from arguments import benchmark_parser
from torch import nn

from kiop_hf import KiOPModel
from kiop_hf.classifiers import FrozenClassifier
from kiop_hf.synthesis import Generator as KiOPGenerator
from kiop_hf.trainer import KiOPTrainer
from kiop_hf.training_args import KiOPTrainingArguments, field_help

CIFAR_MEAN, CIFAR_STD = (0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010)
TEACHER_CLASSES, HOST_CLASSES, IMAGE_SIZE, RINGS = 10, 43, 32, [36, 128]
# scripts/KiOP_B.sh, and the CMISynthesizer call of KiOP_B.py (bank_size, n_neg, head_dim, nz)
REFERENCE = dict(
    batch_size=128, lr_g=0.01, adv=0.5, bn=1.0, oh=1.0, cr=0.8, cr_T=0.6, T=20.0, lr=0.8,
    bank_size=40_960, n_neg=4_096, head_dim=256, nz=256,
)  # fmt: skip
CPU_EDITS = [("real_data = real_data.cuda()", "real_data = real_data.to(images.device)")]


@dataclass
class ReferenceSpeedArguments:
    reference_dir: str = field(
        metadata=field_help("A checkout of github.com/LiQiiiii/Encapsulating-Knowledge-In-One-Prompt.")
    )
    repeats: int = field(default=3, metadata=field_help("Synthesis rounds per side and bank state, interleaved."))
    steps: int = field(default=6, metadata=field_help("Steps per timed synthesis round (steps - 1 are timed)."))
    kd_steps: int = field(default=10, metadata=field_help("Knowledge-storing steps per side, interleaved."))
    batch_size: int = field(default=REFERENCE["batch_size"], metadata=field_help("Synthesis and KD batch."))
    num_negatives: int = field(default=REFERENCE["n_neg"], metadata=field_help("Negatives of a warm bank."))
    memory: bool = field(default=False, metadata=field_help("Also measure each side's peak memory (own process)."))
    profile: bool = field(default=False, metadata=field_help("Also profile one kiop_hf warm-bank synthesis round."))
    memory_of: str | None = field(default=None, metadata=field_help("(internal) measure this side's memory."))
    json: str | None = field(
        default=None,
        metadata=field_help("Also add the figures to this JSON file's runs (same configuration: replaced)."),
    )


def main():
    args = benchmark_parser(ReferenceSpeedArguments, __doc__).parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    reference = load_reference(Path(args.reference_dir), device)
    torch.manual_seed(0)
    teacher, host = resnet18(TEACHER_CLASSES), resnet18(HOST_CLASSES)
    real_images = torch.rand(1024, 3, IMAGE_SIZE, IMAGE_SIZE)
    builders = {"reference": partial(ReferenceSide, reference), "kiop_hf": KiOPSide}
    if args.memory_of:  # the subprocess of measure_memory_in_subprocess: this side alone
        side = builders[args.memory_of](teacher, host, real_images, args, device)
        side.set_negatives(torch.randn(args.num_negatives, 2 * side.feature_dim))
        print(json.dumps(side.peak_memory()))
        return
    sides = {name: build(teacher, host, real_images, args, device) for name, build in builders.items()}
    negatives = torch.randn(args.num_negatives, 2 * sides["kiop_hf"].feature_dim)
    steps = interleaved_steps(sides, negatives, args, device)
    results = report(steps, reference, args, device)
    if args.memory:
        peak = {name: measure_memory_in_subprocess(name) for name in sides}
        results["peak_memory_bytes"] = peak
        results["ratios"]["kiop_hf / reference: peak memory of a synthesis round"] = (
            peak["kiop_hf"] / peak["reference"]
        )
        for name, value in peak.items():
            print(f"peak memory of a warm-bank synthesis round, {name}: {value / 2**20:,.0f} MiB")
        print(f"kiop_hf / reference: {peak['kiop_hf'] / peak['reference']:.2f}")
    if args.profile:
        results["kiop_hf_warm_step_profile"] = profile_warm_round(sides["kiop_hf"], negatives)
        results["kiop_hf_kd_step_parts_seconds"] = kd_step_parts(sides["kiop_hf"], args, device)
    if args.json:
        add_run(Path(args.json), results)


def interleaved_steps(sides: dict, negatives: torch.Tensor, args, device: torch.device) -> dict[str, list[float]]:
    """Seconds per step, by side and kind: the sides take turns, a synthesis round or a KD step at a time."""
    steps: dict[str, list[float]] = {}
    with GeneratorClock() as clock:
        for side in sides.values():  # warm-up: allocations, the reference's first PNG files and loader
            side.set_negatives(negatives)
            side.synthesis_round()
            side.kd_step()
        for bank in ("empty bank", "warm bank"):
            for _ in range(args.repeats):
                for name, side in sides.items():
                    side.set_negatives(negatives if bank == "warm bank" else negatives[:0])
                    clock.start()
                    side.synthesis_round()
                    steps.setdefault(f"{name}: CMI synthesis step, {bank}", []).extend(clock.intervals())
    for _ in range(args.kd_steps):
        for name, side in sides.items():
            start = _now(device)
            side.kd_step()
            steps.setdefault(f"{name}: knowledge-storing step", []).append(_now(device) - start)
    return steps


def report(steps: dict[str, list[float]], reference, args, device: torch.device) -> dict:
    """Print the medians, minimums and ratios; return them with what the run was."""
    print(f"{device}, torch {torch.__version__}, {torch.get_num_threads()} threads")
    print(f"reference commit {reference.commit}; edits: {reference.edits or 'none'}")
    print(f"batch {args.batch_size}, warm bank {args.num_negatives} negatives; medians (min) of interleaved samples")
    for label, values in steps.items():
        print(f"{label:<52}{statistics.median(values):>9.4f} s  ({min(values):.4f}, n={len(values)})")
    ratios = {}
    for label in [k for k in steps if k.startswith("reference: ")]:
        what = label.removeprefix("reference: ")
        ratios[f"reference / kiop_hf: {what}"] = statistics.median(steps[label]) / statistics.median(
            steps[f"kiop_hf: {what}"]
        )
    print()
    for label, value in ratios.items():
        print(f"{label:<60}{value:>7.2f}x")
    return {
        "device": str(device) if device.type != "cuda" else torch.cuda.get_device_name(device),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "kiop_hf_commit": _commit(Path(__file__).parent),
        "reference_commit": reference.commit,
        "reference_edits": reference.edits,
        "configuration": REFERENCE | {"batch_size": args.batch_size, "n_neg": args.num_negatives},
        "seconds": {label: {"median": statistics.median(v), "min": min(v), "n": len(v)} for label, v in steps.items()},
        "ratios": ratios,
    }


def profile_warm_round(side: KiOPSide, negatives: torch.Tensor, top: int = 15) -> list[dict]:
    """Where a kiop_hf warm-bank synthesis round spends its time: the ops with the most self time."""
    from torch.profiler import ProfilerActivity, profile

    side.set_negatives(negatives)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if torch.cuda.is_available() else [])
    with profile(activities=activities) as profiler:
        side.synthesis_round()
    events = sorted(profiler.key_averages(), key=lambda e: e.self_cpu_time_total + _device_time(e), reverse=True)
    total = sum(e.self_cpu_time_total + _device_time(e) for e in events)
    rows = [
        {"op": e.key, "share": (e.self_cpu_time_total + _device_time(e)) / total, "calls": e.count}
        for e in events[:top]
    ]
    print("\nkiop_hf warm-bank synthesis round, self time by op:")
    for row in rows:
        print(f"  {row['op']:<48}{100 * row['share']:>6.1f}%  ({row['calls']} calls)")
    return rows


def kd_step_parts(side: KiOPSide, args, device: torch.device, repeats: int = 3) -> dict[str, float]:
    """A kiop_hf knowledge-storing step and its passes on their own (medians): which of them a step's time is."""
    trainer, model = side.trainer, side.trainer.model
    source = trainer.sources["cifar10"]
    x = torch.rand(args.batch_size, 3, IMAGE_SIZE, IMAGE_SIZE, device=device)

    def frozen_pass(network):
        with torch.no_grad():
            network(x)

    parts = {
        "whole step": side.kd_step,
        "source pass (32 px, no gradient)": partial(frozen_pass, source),
        "target pass (32 px, no gradient)": partial(frozen_pass, model.target),
        f"prompted target pass ({RINGS[-1]} px, forward + backward)": lambda: (
            trainer.prompted("cifar10", x).sum().backward()
        ),
        f"prompted target pass ({RINGS[0]} px, forward + backward)": lambda: model(x, task="target").sum().backward(),
    }
    seconds: dict[str, list[float]] = {label: [] for label in parts}
    for _ in range(repeats + 1):  # the first round warms up
        for label, job in parts.items():
            start = _now(device)
            job()
            seconds[label].append(_now(device) - start)
    medians = {label: statistics.median(values[1:]) for label, values in seconds.items()}
    print("\nkiop_hf knowledge-storing step by part (medians):")
    for label, value in medians.items():
        print(f"  {label:<52}{value:>8.3f} s")
    return medians


def _device_time(event) -> float:
    return getattr(event, "self_device_time_total", 0.0) or 0.0


def add_run(path: Path, results: dict) -> None:
    """Add this run to the JSON file's runs; a run of the same device and configuration replaces the old one."""
    runs = json.loads(path.read_text())["runs"] if path.exists() else []
    key = (results["device"], json.dumps(results["configuration"], sort_keys=True))
    runs = [run for run in runs if (run["device"], json.dumps(run["configuration"], sort_keys=True)) != key]
    path.write_text(json.dumps({"runs": [*runs, results]}, indent=2) + "\n")


def resnet18(num_classes: int) -> nn.Module:
    """The reference's backbone: torchvision's resnet18 with its last layer replaced (random weights here)."""
    model = torchvision.models.resnet18(weights=None)
    model.fc = nn.Linear(model.fc.in_features, num_classes)
    return model


def load_reference(folder: Path, device: torch.device) -> types.SimpleNamespace:
    """The reference's modules, imported from ``folder``; ``KiOP_B.py`` with the CPU edits where needed."""
    if not (folder / "KiOP_B.py").is_file() or not (folder / "datafree" / "synthesis" / "contrastive.py").is_file():
        raise SystemExit(f"--reference-dir {folder}: not a checkout of the reference (no KiOP_B.py / datafree/)")
    missing = [name for name in ("kornia", "termcolor", "lmdb") if importlib.util.find_spec(name) is None]
    if missing:
        raise SystemExit(f"the reference imports {', '.join(missing)}: pip install {' '.join(missing)}")
    sys.path.insert(0, str(folder))
    import datafree  # noqa: F401  (the reference's package)
    from datafree.models.generator import Generator
    from datafree.synthesis import CMISynthesizer

    source = (folder / "KiOP_B.py").read_text()
    edits = []
    if device.type != "cuda":
        for old, new in CPU_EDITS:
            edits += [f"KiOP_B.py: {old!r} -> {new!r} ({source.count(old)}x)"]
            source = source.replace(old, new)
    module = types.ModuleType("KiOP_B")
    module.__file__ = str(folder / "KiOP_B.py")
    exec(compile(source, module.__file__, "exec"), module.__dict__)
    return types.SimpleNamespace(
        train=module.train, fusion=module.model_Fusion, label_mapping=module.label_mapping_base,
        prompt=sys.modules["visual_prompt"].ExpansiveVisualPrompt, kl=datafree.criterions.KLDiv,
        dummy_ctx=datafree.utils.dummy_ctx, Generator=Generator, CMISynthesizer=CMISynthesizer,
        commit=_commit(folder), edits=edits,
    )  # fmt: skip


class ReferenceSide:
    """The reference's synthesizer, student (host behind its two prompts) and KD step, built as KiOP_B.py does."""

    def __init__(self, ref, teacher, host, real_images, args, device):
        import numpy as np
        from torchvision import transforms

        self.ref, self.device = ref, device
        self.teacher = copy.deepcopy(teacher).to(device).eval()
        periphery = ref.prompt(RINGS[0], mask=np.zeros((IMAGE_SIZE, IMAGE_SIZE)))
        core = ref.prompt(RINGS[1], mask=np.zeros((RINGS[0], RINGS[0])))
        mapping = partial(ref.label_mapping, mapping_sequence=torch.randperm(HOST_CLASSES)[:TEACHER_CLASSES])
        self.student = ref.fusion(periphery, copy.deepcopy(host), mapping, core).to(device)
        normalizer = transforms.Normalize(CIFAR_MEAN, CIFAR_STD)
        self.synthesizer = ref.CMISynthesizer(
            self.teacher, self.student, ref.Generator(nz=REFERENCE["nz"], ngf=64, img_size=32, nc=3).to(device),
            nz=REFERENCE["nz"], num_classes=TEACHER_CLASSES, img_size=(3, IMAGE_SIZE, IMAGE_SIZE), feature_layers=None,
            cn=3, bank_size=REFERENCE["bank_size"], n_neg=args.num_negatives, head_dim=REFERENCE["head_dim"],
            iterations=args.steps, lr_g=REFERENCE["lr_g"], synthesis_batch_size=args.batch_size,
            sample_batch_size=args.batch_size, adv=REFERENCE["adv"], bn=REFERENCE["bn"], oh=REFERENCE["oh"],
            cr=REFERENCE["cr"], cr_T=REFERENCE["cr_T"], save_dir=tempfile.mkdtemp(prefix="kiop-reference-"),
            transform=transforms.Compose(  # registry.py's cifar10 training transform
                [transforms.RandomCrop(32, padding=4), transforms.RandomHorizontalFlip(), transforms.ToTensor(),
                 normalizer]
            ),
            normalizer=normalizer, device=device,
        )  # fmt: skip
        self.real = (normalizer(real_images[: args.batch_size]).to(device), torch.zeros(args.batch_size))
        self.optimizer = torch.optim.SGD(self.student.parameters(), REFERENCE["lr"], weight_decay=1e-4, momentum=0.9)
        self.args = types.SimpleNamespace(
            kd_steps=1, gpu=0 if device.type == "cuda" else None, autocast=ref.dummy_ctx, fp16=False, print_freq=0,
            current_epoch=0,
        )  # fmt: skip
        self.criterion = ref.kl(T=REFERENCE["T"])
        self.feature_dim = self.synthesizer.mem_bank.dim_feat // 2

    def set_negatives(self, rows: torch.Tensor) -> None:
        bank = self.synthesizer.mem_bank
        bank.data[: len(rows)] = rows.to(bank.data)
        bank._ptr = bank.n_updates = len(rows)

    def synthesis_round(self) -> None:
        self.synthesizer.synthesize()

    def kd_step(self) -> None:
        real = iter(lambda: self.real, None)  # the host-domain loader: the same batch every time
        self.ref.train(self.synthesizer, [self.student, self.teacher], "cifar10", real, None, self.criterion,
                       self.optimizer, self.args)  # fmt: skip

    def peak_memory(self) -> int:
        return _peak_memory_of(self.synthesis_round, self.device)


class KiOPSide:
    """kiop_hf's trainer at the reference's configuration: CMI synthesis of the teacher, KiOP-B knowledge storing."""

    def __init__(self, teacher, host, real_images, args, device):
        def frozen(model, classes):
            return FrozenClassifier(
                copy.deepcopy(model), class_names=[str(i) for i in range(classes)], image_size=IMAGE_SIZE,
                mean=CIFAR_MEAN, std=CIFAR_STD,
            )  # fmt: skip

        self.device = device
        source, target = frozen(teacher, TEACHER_CLASSES), frozen(host, HOST_CLASSES)
        model = KiOPModel.from_models(target, {"cifar10": source}, image_size=IMAGE_SIZE, ring_sizes=RINGS)
        training = KiOPTrainingArguments(
            output_dir=tempfile.mkdtemp(prefix="kiop-hf-"), use_cpu=device.type != "cuda", synthesizer="cmi",
            batch_size=args.batch_size, synthesis_steps=args.steps, synthesis_lr=REFERENCE["lr_g"],
            adv_weight=REFERENCE["adv"], bn_weight=REFERENCE["bn"], oh_weight=REFERENCE["oh"],
            cr_weight=REFERENCE["cr"], cr_temperature=REFERENCE["cr_T"], memory_bank_size=REFERENCE["bank_size"],
            num_negatives=args.num_negatives, head_dim=REFERENCE["head_dim"], reset_generator=True,
            temperature=REFERENCE["T"], learning_rate=REFERENCE["lr"], preservation="B", rounds=1, kd_steps=1,
        )  # fmt: skip
        self.trainer = KiOPTrainer(model, {"cifar10": source}, training, preservation_images=real_images)
        self.trainer.setup()
        self.synthesizer = self.trainer.synthesizers["cifar10"]
        self.feature_dim = self.synthesizer.statistics.feature_dim

    def set_negatives(self, rows: torch.Tensor) -> None:
        memory = self.synthesizer.memory
        memory.features[: len(rows)] = rows.to(memory.features)
        memory.count = len(rows)

    def synthesis_round(self) -> None:
        self.trainer.synthesize()

    def kd_step(self) -> None:
        self.trainer.knowledge_storing_step()

    def peak_memory(self) -> int:
        return _peak_memory_of(self.synthesis_round, self.device)


class GeneratorClock:
    """Times synthesis steps as the intervals between successive generator passes (either side's generator)."""

    def __enter__(self):
        self._handle = nn.modules.module.register_module_forward_pre_hook(self._tick)
        self._times: list[float] = []
        return self

    def __exit__(self, *exc):
        self._handle.remove()

    def _tick(self, module, inputs):
        if isinstance(module, KiOPGenerator) or type(module).__module__ == "datafree.models.generator":
            self._times.append(_now(inputs[0].device))

    def start(self) -> None:
        self._times = []

    def intervals(self) -> list[float]:
        return [later - earlier for earlier, later in zip(self._times, self._times[1:])]


def _commit(folder: Path) -> str:
    try:
        command = ["git", "-C", str(folder), "rev-parse", "HEAD"]
        return subprocess.run(command, capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown (not a git checkout)"


def _now(device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter()


def _peak_memory_of(job, device: torch.device) -> int:
    """Bytes a job adds at its peak over what is held before it (after a warm-up run, so its first allocations
    are not counted). CPU: the peak resident set, reset before the job (Linux's /proc/self/clear_refs)."""
    job()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        job()
        return torch.cuda.max_memory_allocated(device) - before
    Path("/proc/self/clear_refs").write_text("5")  # the peak resident set starts again from the current one
    before = _status_bytes("VmRSS")
    job()
    return _status_bytes("VmHWM") - before


def _status_bytes(field: str) -> int:
    line = next(line for line in Path("/proc/self/status").read_text().splitlines() if line.startswith(field))
    return int(line.split()[1]) * 1024


def measure_memory_in_subprocess(side: str) -> int:
    """One side's peak, in a process of its own (the other side's models and the timing run are not in it)."""
    command = [sys.executable, __file__, *sys.argv[1:], "--memory_of", side, "--memory", "false"]
    result = subprocess.run(command, capture_output=True, text=True, check=True)
    return int(result.stdout.strip().splitlines()[-1])


if __name__ == "__main__":
    main()
