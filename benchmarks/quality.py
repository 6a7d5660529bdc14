"""Quality benchmark: one zoo source into the zoo target, every row with the same budget.

Rows: the untrained prompt; KiOP-B (preservation on real unlabelled target images); KiOP-BF (fully data-free);
the PromptKD regime (the source's real training images with their labels withheld as the transfer set, real
unlabelled target images for preservation); the same prompt trained on the source's real labelled data (the
data-rich upper bound of visual reprogramming);
and classic data-free distillation of the source into a fresh small student (a whole network stored).
Columns: source accuracy on its real test set, target retention (own-task accuracy with the core ring, and its
drop against the unprompted target), trainable parameters, bytes stored, wall time. Rows trained on synthetic
images also print how well the prompt fits its own synthetic bank (agreement with the source there), how sure
the source is of those images, and how alike the bare target reads them and real images of the same classes: the
figures that say why data-free transfer falls short of real data.

    python benchmarks/quality.py                 # the default budget (10 rounds of 30 + 40 steps per row)
    python benchmarks/quality.py --rounds 4 --json results.json
    python benchmarks/quality.py --rows BF real --seeds 0 1 2   # mean and spread over seeds
    python benchmarks/quality.py --rows BF --set temperature=4  # any other training argument
    python benchmarks/quality.py --rows unlabelled --transfer-limit 640   # a real transfer set of the bank's size

Runs of the data-free rows vary by several points from seed to seed, so compare methods over several seeds.
"""

from __future__ import annotations

import json
import statistics
import tempfile
import time
from functools import cached_property
from pathlib import Path

import torch
import torch.nn.functional as F
from arguments import SeededBenchmarkArguments, benchmark_parser, parse_benchmark_args

from kiop_hf import KiOPModel, load_classifier
from kiop_hf.configuration_kiop import TARGET_TASK
from kiop_hf.data import dataset_tensors
from kiop_hf.evaluation import evaluate_tasks, predict
from kiop_hf.label_mapping import frequency_label_maps
from kiop_hf.losses import distillation_loss
from kiop_hf.pixels import to_unit_range
from kiop_hf.synthesis import DataBank, make_synthesizer
from kiop_hf.train_job import SCHEDULES
from kiop_hf.trainer import KiOPTrainer
from kiop_hf.training_args import KiOPTrainingArguments
from kiop_hf.zoo.build import REFERENCE_ZOO, build_zoo, dataset_path, weights_digest

ROWS = ["untrained", "B", "BF", "unlabelled", "real", "dfkd"]
BANK_FIT = ["bank_agreement", "source_confidence_bank", "source_confidence_test", "target_reading_overlap"]


def parse_args():
    # --set: the KiOP rows train with it; the real-data row takes its optimiser and temperature from it, the DFKD
    # row its synthesis
    parser = benchmark_parser(SeededBenchmarkArguments, __doc__)
    parser.add_argument("--source", default="fashion-mnist-resnet", help="zoo source model")
    parser.add_argument("--target", default="letters-resnet10t", help="zoo target model")
    parser.add_argument("--ring-sizes", type=int, nargs="+", default=[36, 64])
    parser.add_argument(
        "--schedule",
        choices=sorted(SCHEDULES),
        default="fast",
        help="the embedded default's schedule (fast) or the earlier CMI default's; the flags below override it",
    )
    for name in ("rounds", "synthesis_steps", "kd_steps", "batch_size"):  # default: the schedule's budget
        parser.add_argument(f"--{name.replace('_', '-')}", type=int)
    parser.add_argument("--bn-weight", type=float, help="BatchNorm prior weight (reference: 1.0)")
    parser.add_argument("--learning-rate", type=float, help="prompt SGD learning rate (reference: 0.8)")
    parser.add_argument("--adv-weight", type=float, help="adversarial term weight (default: the schedule's)")
    parser.add_argument("--reset-generator", action="store_true", help="re-initialise the generator every round")
    parser.add_argument(
        "--label-mapping", choices=["random", "frequency"], help="default: the schedule's (the embedded default's)"
    )
    parser.add_argument(
        "--transfer-limit",
        type=int,
        help="the unlabelled row reads only this many source images (a fixed random "
        "subset), e.g. 640, the size of the synthetic bank at the default budget",
    )
    parser.add_argument("--rows", nargs="+", default=ROWS, choices=ROWS, help="rows to measure (default: all)")
    args = parse_benchmark_args(parser)
    for name in ("rounds", "synthesis_steps", "kd_steps", "batch_size", "bn_weight", "learning_rate"):
        if getattr(args, name) is None:
            setattr(args, name, SCHEDULES[args.schedule][name])
    return args


@torch.no_grad()
def target_reading(
    model: KiOPModel, task: str, images: torch.Tensor, classes: torch.Tensor, num_classes: int
) -> torch.Tensor:
    """Counts of how the target, through ``task``'s rings, reads images: rows are the images' source classes (of
    ``num_classes``), columns the target's top-1 classes."""
    predictions = model.target_logits(images, task=task).argmax(-1)
    table = torch.zeros(num_classes, model.config.target_num_labels)
    table.index_put_((classes.cpu(), predictions.cpu()), torch.ones(len(classes)), accumulate=True)
    return table


def file_bytes(path: Path) -> int:
    return (path / "model.safetensors").stat().st_size


class Bench:
    """The zoo models, their real data and the shared budget."""

    def __init__(self, args):
        self.args = args
        root = Path(args.zoo_root)
        specs = {spec.name: spec for spec in REFERENCE_ZOO}
        source_spec, target_spec = specs[args.source], specs[args.target]
        build_zoo(root, [source_spec, target_spec])
        self.task = source_spec.dataset
        self.source = load_classifier(root / args.source)
        self.target = load_classifier(root / args.target)
        self.zoo_digest = weights_digest(root / args.source, root / args.target)
        self.source_data = dataset_path(root, source_spec.dataset)
        self.target_data = dataset_path(root, target_spec.dataset)
        limit = args.eval_limit
        self.tests = {
            self.task: dataset_tensors(self.source_data, 32, self.source.num_channels, "test", limit),
            TARGET_TASK: dataset_tensors(self.target_data, 32, self.target.num_channels, "test", limit),
        }
        self.workdir = Path(tempfile.mkdtemp(prefix="kiop-quality-"))
        self.seed = args.seeds[0]

    def fresh_model(self, label_maps: dict[str, list[int]] | None = None) -> KiOPModel:
        return KiOPModel.from_models(
            self.target,
            {self.task: self.source},
            image_size=32,
            ring_sizes=self.args.ring_sizes,
            label_maps=label_maps,
            seed=self.seed,
        )

    def training_args(self, name: str, preservation: str, **extra) -> KiOPTrainingArguments:
        a = self.args
        run = dict(
            rounds=a.rounds,
            synthesis_steps=a.synthesis_steps,
            kd_steps=a.kd_steps,
            batch_size=a.batch_size,
            learning_rate=a.learning_rate,
            bn_weight=a.bn_weight,
            reset_generator=a.reset_generator,
            output_dir=str(self.run_dir(name)),
            preservation=preservation,
            seed=self.seed,
            save_every_rounds=a.rounds,
            use_cpu=True,
        )
        for name in ("adv_weight", "label_mapping"):  # default: the schedule's
            if getattr(a, name) is not None:
                run[name] = getattr(a, name)
        return KiOPTrainingArguments(**SCHEDULES[a.schedule] | run | dict(a.set) | extra)

    def run_dir(self, name: str) -> Path:
        return self.workdir / f"{name} (seed {self.seed})"

    def prompt_row(self, name: str, model: KiOPModel, seconds: float) -> dict:
        model.save_pretrained(self.run_dir(name))
        scores = evaluate_tasks(model, self.tests)
        return {
            "method": name,
            "seed": self.seed,
            "source_accuracy": scores[self.task],
            "target_accuracy": scores[TARGET_TASK],
            "retention_drop_points": scores["target/retention_drop"],
            "trainable_parameters": model.prompt.num_parameters(),
            "bytes_stored": file_bytes(self.run_dir(name)),
            "wall_seconds": round(seconds, 1),
        }

    # -- rows -----------------------------------------------------------------------------------------------------

    def untrained(self) -> dict:
        return self.prompt_row("untrained prompt", self.fresh_model(), 0.0)

    def kiop(self, preservation: str, transfer_data: str = "synthetic") -> dict:
        torch.manual_seed(self.seed)
        model, start = self.fresh_model(), time.perf_counter()
        name = f"KiOP-{preservation}"
        if transfer_data != "synthetic":
            name = f"{self.args.transfer_limit or 'all'} unlabelled source images, {preservation}"
        args = self.training_args(name, preservation, transfer_data=transfer_data)
        trainer = KiOPTrainer(
            model,
            {self.task: self.source},
            args,
            preservation_images=self.target_data if preservation == "B" else None,
            transfer_images=self.transfer_images() if transfer_data != "synthetic" else None,
        )
        trainer.train()
        row = self.prompt_row(name, model, time.perf_counter() - start)
        if transfer_data == "synthetic":
            row |= self.bank_fit(model, trainer.banks[self.task].images) | {
                "bank_images": len(trainer.banks[self.task])
            }
        return row

    @torch.no_grad()
    def bank_fit(self, model: KiOPModel, bank: torch.Tensor) -> dict:
        """Why synthetic transfer falls short: how often the trained prompt agrees with the source on the very
        synthetic images it was trained on, which classes the source sees in them, how sure the source is of those
        images and of its real test images, and how alike the target reads them and real ones."""
        source_classes = self.source(bank).argmax(-1)
        agreement = self.source_agreement(model, bank, source_classes)
        shares = torch.bincount(source_classes, minlength=self.source.num_labels) / len(bank)
        return {
            "bank_agreement": agreement,
            "bank_class_shares": [round(share, 4) for share in shares.tolist()],  # the source's reading of the bank
            "source_confidence_bank": self.source_confidence(bank),
            "source_confidence_test": self.source_confidence_test,
            "target_reading_overlap": self.target_reading_overlap(bank, source_classes),
        }

    @torch.no_grad()
    def target_reading_overlap(self, bank: torch.Tensor, source_classes: torch.Tensor) -> float:
        """How alike the target reads the synthetic images and the real ones, before any prompt training: for each
        source class, the histogram of the target's top-1 classes (through a fresh grey prompt) over the bank images
        the source reads as that class, against the same histogram over the real test images of that class; the mean
        overlap of the two (1: read alike, 0: never the same target class). 2,000 real training images in place of the
        bank overlap 0.86, so the shortfall is what the target sees differently in synthetic images."""
        images, labels = self.tests[self.task]
        model = self.fresh_model()
        real, synthetic = (
            counts / counts.sum(1, keepdim=True).clamp_min(1)
            for counts in (
                target_reading(model, self.task, to_unit_range(images), labels, self.source.num_labels),
                target_reading(model, self.task, bank, source_classes, self.source.num_labels),
            )
        )
        return torch.minimum(real, synthetic).sum(1).mean().item()

    @torch.no_grad()
    def source_agreement(self, model: KiOPModel, images: torch.Tensor, source_classes: torch.Tensor | None = None):
        """How often the prompted target reads ``images`` as the source does (``source_classes``, where the caller
        has them already): the fit of a prompt to the images it was trained on (its synthetic bank, or the real
        row's training images), comparable across rows."""
        if source_classes is None:
            source_classes = self.source(images).argmax(-1)
        return (model(images, task=self.task).argmax(-1) == source_classes).float().mean().item()

    @torch.no_grad()
    def source_confidence(self, images: torch.Tensor) -> float:
        """The source's mean top-1 probability on ``images``."""
        return self.source(to_unit_range(images)).softmax(-1).amax(-1).mean().item()

    @cached_property
    def source_confidence_test(self) -> float:
        return self.source_confidence(self.tests[self.task][0])

    def transfer_images(self):
        """The source's training images for the unlabelled row: all of them, or a fixed random subset."""
        if self.args.transfer_limit is None:
            return self.source_data
        images, _ = dataset_tensors(self.source_data, 32, self.source.num_channels, "train")
        order = torch.randperm(len(images), generator=torch.Generator().manual_seed(123))
        return images[order[: self.args.transfer_limit]]

    def real_data_prompt(self) -> dict:
        """The same prompt and optimiser on real labelled source data (cross-entropy) and real target images."""
        a = self.args
        torch.manual_seed(self.seed)
        start = time.perf_counter()
        images, labels = dataset_tensors(self.source_data, 32, self.source.num_channels, "train")
        training = self.training_args("real", "B")
        label_maps = self.real_label_maps(images, labels) if training.label_mapping == "frequency" else None
        model = self.fresh_model(label_maps)
        preservation = DataBank()
        preservation.add(dataset_tensors(self.target_data, 32, self.target.num_channels, "train")[0])
        steps = a.rounds * a.kd_steps
        optimizer = torch.optim.SGD(
            model.prompt.parameters(),
            lr=training.learning_rate,
            momentum=training.momentum,
            weight_decay=training.weight_decay,
        )
        schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, steps)
        for _ in range(steps):
            batch = torch.randint(len(images), (a.batch_size,))
            loss = F.cross_entropy(model(to_unit_range(images[batch]), task=self.task), labels[batch])
            x = preservation.sample(a.batch_size)
            with torch.no_grad():
                teacher = self.target(x)
            loss = loss + distillation_loss(model(x), teacher, training.temperature)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            schedule.step()
        row = self.prompt_row("real-data prompt (upper bound)", model, time.perf_counter() - start)
        return row | {"train_agreement": self.source_agreement(model, to_unit_range(images[:2000]))}

    @torch.no_grad()
    def real_label_maps(self, images: torch.Tensor, labels: torch.Tensor) -> dict[str, list[int]]:
        """The trainer's frequency maps, from as many real labelled images as it reads from its first bank."""
        rows = torch.randint(len(images), (4 * self.args.batch_size,))
        model, classes = self.fresh_model(), self.source.num_labels
        table = target_reading(model, self.task, to_unit_range(images[rows]), labels[rows], classes)
        return frequency_label_maps({self.task: table})

    def dfkd_student(self) -> dict:
        """Data-free distillation of the source into a fresh small student, same synthesis, rounds and steps."""
        import timm

        a = self.args
        torch.manual_seed(self.seed)
        start = time.perf_counter()
        network = timm.create_model(
            "test_resnet", num_classes=self.source.num_labels, in_chans=self.source.num_channels
        )
        mean, std = self.source.mean, self.source.std
        student = lambda x: network((x - mean) / std)  # noqa: E731
        training = self.training_args("dfkd", "none")
        synthesizer = make_synthesizer(training.synthesizer, self.source, **training.synthesizer_kwargs())
        bank = DataBank()
        optimizer = torch.optim.SGD(network.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
        schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, a.rounds * a.kd_steps)
        for _ in range(a.rounds):
            network.eval()
            bank.add(synthesizer.synthesize(student))
            network.train()
            for _ in range(a.kd_steps):
                x = bank.sample(a.batch_size)
                with torch.no_grad():
                    teacher = self.source(x)
                loss = distillation_loss(student(x), teacher, temperature=training.temperature)
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                schedule.step()
        network.eval()
        seconds = time.perf_counter() - start
        images, labels = self.tests[self.task]
        accuracy = (predict(student, images, torch.device("cpu")) == labels).float().mean().item()
        from safetensors.torch import save_file

        path = self.run_dir("dfkd") / "model.safetensors"
        path.parent.mkdir(parents=True, exist_ok=True)
        save_file({k: v.contiguous() for k, v in network.state_dict().items()}, path)
        return {
            "method": f"DFKD student ({training.synthesizer}, test_resnet)",
            "seed": self.seed,
            "source_accuracy": accuracy,
            "target_accuracy": None,
            "retention_drop_points": None,
            "trainable_parameters": sum(p.numel() for p in network.parameters()),
            "bytes_stored": path.stat().st_size,
            "wall_seconds": round(seconds, 1),
        }


def format_row(r: dict) -> str:
    fmt = lambda v, spec: "-" if v is None else format(v, spec)  # noqa: E731
    spread = f" ±{r['source_accuracy_sd']:.2%}" if r.get("source_accuracy_sd") is not None else ""
    return (
        f"{r['method']:<34}{fmt(r['source_accuracy'], '.2%') + spread:>18}{fmt(r['target_accuracy'], '.2%'):>11}"
        f"{fmt(r['retention_drop_points'], '.2f'):>11}{r['trainable_parameters']:>10,}{r['bytes_stored']:>11,}"
        f"{r['wall_seconds']:>9.1f}"
    )


def format_bank_fit(r: dict) -> str:
    return (
        f"  fit to its synthetic bank: the prompt agrees with the source on {r['bank_agreement']:.2%} of it; the "
        f"source's mean top-1 probability is {r['source_confidence_bank']:.3f} there, "
        f"{r['source_confidence_test']:.3f} on real test images; the bare target reads it like real images of the "
        f"same classes to an overlap of {r['target_reading_overlap']:.3f}"
    )


def summarise(runs: list[dict]) -> dict:
    """One row per method: means over its seeds, the source accuracy's standard deviation and every seed's value."""
    mean = lambda key: None if runs[0][key] is None else sum(r[key] for r in runs) / len(runs)  # noqa: E731
    averaged = ["source_accuracy", "target_accuracy", "retention_drop_points", "wall_seconds", *BANK_FIT]
    row = runs[0] | {key: mean(key) for key in averaged if key in runs[0]}
    row["seeds"] = [r["seed"] for r in runs]
    row["source_accuracy_per_seed"] = [r["source_accuracy"] for r in runs]
    row["source_accuracy_sd"] = statistics.stdev(row["source_accuracy_per_seed"]) if len(runs) > 1 else None
    del row["seed"]
    return row


def main():
    args = parse_args()
    bench = Bench(args)
    header = (
        f"{args.source} -> {args.target}, rings {[32, *args.ring_sizes]}, {args.rounds} rounds x "
        f"({args.synthesis_steps} synthesis + {args.kd_steps} KD steps), batch {args.batch_size}, seeds {args.seeds}; "
        f"the target has {sum(p.numel() for p in bench.target.parameters()):,} parameters"
    )
    columns = (
        f"{'method':<34}{'source acc':>18}{'target acc':>11}{'drop (pts)':>11}{'params':>10}{'bytes':>11}{'wall s':>9}"
    )
    runs = {
        "untrained": bench.untrained,
        "B": lambda: bench.kiop("B"),
        "BF": lambda: bench.kiop("BF"),
        "unlabelled": lambda: bench.kiop("B", "unlabelled"),
        "real": bench.real_data_prompt,
        "dfkd": bench.dfkd_student,
    }
    per_seed, rows = [], []
    for name in args.rows:
        measured = []
        for bench.seed in args.seeds:
            measured.append(runs[name]())
            print(f"[seed {bench.seed}] {format_row(measured[-1])}", flush=True)  # each run as soon as it is measured
            if "bank_agreement" in measured[-1]:
                print(f"[seed {bench.seed}] {format_bank_fit(measured[-1])}", flush=True)
        per_seed += measured
        rows.append(summarise(measured))
        if args.json:
            Path(args.json).write_text(
                json.dumps({"setting": vars(args), "zoo": bench.zoo_digest, "rows": rows, "runs": per_seed}, indent=2)
                + "\n"
            )
    print(f"\n{header}\n{columns}")
    for row in rows:
        print(format_row(row))
    for row in rows:
        if "bank_agreement" in row:
            print(f"{row['method']}, mean over seeds:{format_bank_fit(row)}")


if __name__ == "__main__":
    main()
