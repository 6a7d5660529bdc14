"""KiOPTrainer: alternate synthesis and knowledge storing on accelerate, training only the prompt.

One round = one synthesis round per inverted model (each source, and the target itself in the data-free ``BF``
mode), whose best batch joins that model's data bank, then ``kd_steps`` steps of SGD on the prompt:
for each source k, T^2 KL(source_k(x) || map_k(target(rings_0..k(x)))) on x from source k's bank (synthetic,
real unlabelled transfer images, or both, per ``transfer_data``), plus the
preservation term T^2 KL(target(x) || target(core(x))) on target-domain images (real in ``B``, synthetic in
``BF``). Frozen models stay in eval mode and out of ``prepare``. With several processes each rank synthesises
its own data (seeds differ per rank), the prompt's gradients are averaged, and only the main process writes.
"""

from __future__ import annotations

import json
import os
import time
from functools import partial
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.utils import ProjectConfiguration, set_seed
from tqdm.auto import tqdm

from . import run_state
from .augment import mix, shift_and_flip
from .checkpointing import next_index, write_checkpoint
from .classifiers import FrozenClassifier
from .configuration_kiop import TARGET_TASK
from .data import dataset_tensors
from .evaluation import evaluate_tasks
from .label_mapping import frequency_label_maps
from .losses import distillation_loss
from .pixels import resize
from .prompted_model import KiOPModel
from .saving import staged_save
from .synthesis import DataBank, make_synthesizer
from .training_args import KiOPTrainingArguments
from .training_inputs import check_training_inputs

LONG_SYNTHESIS_ROUND = 50  # synthesis steps from which a round shows its own progress bar


class KiOPTrainer:
    """Trains ``model``'s prompt to carry the knowledge of ``sources`` (task name -> frozen classifier).

    Args:
        model: the prompt around its frozen target (see ``KiOPModel.from_models``).
        sources: the frozen source classifiers, by the task names of ``model.config``.
        args: the run's ``KiOPTrainingArguments``.
        preservation_images: for ``preservation="B"``: unlabelled real images of the target's domain, as a
            ``datasets`` Dataset / DatasetDict, a saved dataset or image folder path, a Hub dataset id, or a
            uint8/float tensor (N, C, H, W). Labels, if any, are ignored.
        transfer_images: for ``transfer_data="unlabelled"`` or ``"mixed"``: unlabelled real images to read the
            sources' knowledge from, in any of the forms above; one set for every source, or a dict by task name.
        eval_sets: labelled test sets by task name (``"target"`` for the target's own task): datasets, saved
            dataset or image folders, Hub dataset ids, or ``(images, labels)`` tensors; evaluated at the end of
            training, recorded in ``results.json`` and in the model card.
    """

    def __init__(
        self,
        model: KiOPModel,
        sources: dict[str, FrozenClassifier],
        args: KiOPTrainingArguments,
        preservation_images=None,
        transfer_images=None,
        eval_sets: dict | None = None,
    ):
        transfer_images = check_training_inputs(model, sources, args, preservation_images, transfer_images, eval_sets)
        self.model = model
        self.sources = sources
        self.args = args
        self.accelerator = Accelerator(
            cpu=args.use_cpu,
            mixed_precision=args.mixed_precision,
            log_with=args.report_to or None,
            project_config=ProjectConfiguration(
                project_dir=args.output_dir, logging_dir=str(Path(args.output_dir) / "runs")
            ),
        )
        if self.accelerator.mixed_precision == "fp16":  # e.g. from `accelerate config`: bf16 needs no loss scaling
            raise ValueError(
                "mixed_precision fp16 is not supported (the prompt's gradients are not loss-scaled); use bf16"
            )
        self.preservation_images = preservation_images
        self.transfer_images = transfer_images
        self.eval_sets = eval_sets or {}
        self.history: list[dict] = []
        self.results: dict[str, float] = {}
        self.is_set_up = False
        self._hub_repo_id: str | None = None

    # -- set-up -------------------------------------------------------------------------------------------------

    def _inverted_models(self) -> dict[str, FrozenClassifier]:
        """Each model with a synthesizer and a data bank: the sources (unless they are read from real images only),
        and the target itself in BF mode."""
        inverted = dict(self.sources) if self.args.transfer_data != "unlabelled" else {}
        if self.args.preservation == "BF":
            inverted[TARGET_TASK] = self.model.target
        return inverted

    def _real_bank(self, images, num_channels: int, image_size: int) -> DataBank:
        if not isinstance(images, torch.Tensor):
            images, _ = dataset_tensors(images, image_size, num_channels)
        bank = DataBank()
        bank.add(images.to(self.accelerator.device))  # kept on the device, in its own dtype (uint8 stays small)
        return bank

    def setup(self) -> None:
        """Seed, move the models to the device, build the synthesizers, banks, optimizer and schedule (``train``
        calls it; call it first to drive ``synthesize`` / ``knowledge_storing_step`` by hand, as benchmarks do)."""
        args, device = self.args, self.accelerator.device
        set_seed(args.seed, device_specific=args.seed_per_process)  # by default each rank synthesises other data
        self.model.to(device)
        for source in self.sources.values():
            source.to(device)
        kwargs = args.synthesizer_kwargs()
        self.synthesizers = {
            name: make_synthesizer(args.synthesizer, m, **kwargs) for name, m in self._inverted_models().items()
        }
        for name, synthesizer in self.synthesizers.items():
            self.accelerator.print(f"synthesis of {name!r}: {synthesizer.describe_terms()}")
        self.banks = {name: DataBank(args.data_bank_size) for name in self.synthesizers}
        if args.preservation == "B":
            config = self.model.config
            self.banks[TARGET_TASK] = self._real_bank(self.preservation_images, config.num_channels, config.image_size)
        # Each source's knowledge-storing batch is split evenly over its banks: synthetic, real, or both.
        self.source_banks = {name: [self.banks[name]] if name in self.banks else [] for name in self.sources}
        for name, images in (self.transfer_images or {}).items():
            source = self.sources[name]
            self.source_banks[name].append(self._real_bank(images, source.num_channels, source.image_size))
        prompt = self.model.prompt
        self.optimizer = torch.optim.SGD(
            prompt.parameters(), lr=args.learning_rate, momentum=args.momentum, weight_decay=args.weight_decay
        )
        self.scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(self.optimizer, T_max=args.rounds * args.kd_steps)
        # The prompt is tiny and called once per task per step, so its gradients are averaged by hand rather than
        # through DDP; optimizer and scheduler are identical on every rank.
        self.round = 0
        self._next_checkpoint = next_index(args.output_dir)
        self.write_prompt_config()
        self.is_set_up = True

    # -- the two periods ----------------------------------------------------------------------------------------

    def prompted(self, task: str, images: torch.Tensor) -> torch.Tensor:
        """The prompted target's logits for a task's images (in that task's model's own size)."""
        return self.model(resize(images, self.model.config.image_size), task=task)

    def synthesize(self) -> dict[str, float]:
        """Synthesis period: one round per inverted model against the current prompt; best batch into its bank."""
        prompt = self.model.prompt.requires_grad_(False)
        losses = {}
        for name, synthesizer in self.synthesizers.items():
            with self.accelerator.autocast():
                images = synthesizer.synthesize(partial(self.prompted, name), progress=self._progress)
            self.banks[name].add(self._sure_of(name, images))
            losses.update({f"synthesis/{name}/{term}": v for term, v in synthesizer.last_losses.items()})
        prompt.requires_grad_(True)
        return losses

    @torch.no_grad()
    def _sure_of(self, name: str, images: torch.Tensor) -> torch.Tensor:
        """A source's synthetic images that it classifies with at least ``bank_min_confidence`` (at least the
        surest one); the target's images and a zero threshold keep every image."""
        threshold = self.args.bank_min_confidence
        if threshold == 0 or name not in self.sources:
            return images
        confidence = self.sources[name](images.float()).softmax(-1).amax(-1)
        keep = confidence >= threshold
        keep[confidence.argmax()] = True
        return images[keep]

    @property
    def _progress(self) -> bool:
        """A progress bar over the steps of a synthesis round when the round is long (CMI's hundreds of steps)."""
        steps = self.args.synthesis_settings().get("synthesis_steps", 0)
        return self.accelerator.is_main_process and steps >= LONG_SYNTHESIS_ROUND

    def _label_maps_due(self) -> bool:
        every = self.args.label_mapping_refresh_rounds
        return self.args.label_mapping == "frequency" and (self.round == 0 or (every > 0 and self.round % every == 0))

    @torch.no_grad()
    def update_label_maps(self) -> dict[str, list[int]]:
        """Frequency-based label maps from each source's bank: which target class the prompted target predicts
        for the samples of each source class (the source's own prediction is the class). Counts are summed over
        processes, so every rank sets the same maps."""
        counts = {}
        for name, source in self.sources.items():
            x = torch.cat([bank.sample(4 * self.args.batch_size) for bank in self.source_banks[name]])
            x = x.to(self.accelerator.device)
            labels = source(x).argmax(-1)
            predictions = self.model.target_logits(resize(x, self.model.config.image_size), task=name).argmax(-1)
            table = torch.zeros(source.num_labels, self.model.config.target_num_labels, device=x.device)
            table.index_put_((labels, predictions), torch.ones_like(labels, dtype=table.dtype), accumulate=True)
            counts[name] = self.accelerator.reduce(table, reduction="sum").cpu()
        maps = frequency_label_maps(counts)
        self.write_prompt_config(maps)
        return maps

    def write_prompt_config(self, label_maps: dict[str, list[int]] | None = None) -> None:
        """The one place the trainer writes into the prompt's config: the run's data regime, and frequency-based
        label maps when given."""
        config = self.model.config
        config.data_regime = {"transfer": self.args.transfer_data, "preservation": self.args.preservation}
        if label_maps is not None:
            for source in config.sources:
                source["label_map"] = list(label_maps[source["name"]])
            config.label_mapping = "frequency"
        config.validate()

    def _sample(self, bank: DataBank, n: int) -> torch.Tensor:
        """A knowledge-storing draw: synthetic banks give ``recent_share`` of it from their newest batch."""
        synthetic = any(bank is self.banks.get(name) for name in self.synthesizers)
        return bank.sample(n, recent_share=self.args.recent_share if synthetic else 0.0)

    def distillation_views(self, images: torch.Tensor) -> torch.Tensor:
        """The source images a knowledge-storing step reads (``kd_shift``, ``kd_flip``, ``kd_mix``), before the
        rings go on; the source is asked about these very images, so its answers stay consistent with them."""
        args = self.args
        if args.kd_shift or args.kd_flip:
            images = shift_and_flip(images, args.kd_shift, args.kd_flip)
        if args.kd_mix != "none" and args.kd_mix_prob > 0:
            images = mix(images, args.kd_mix, args.kd_mix_prob, args.kd_mix_alpha)
        return images

    def knowledge_storing_step(self) -> dict[str, float]:
        """One SGD step on the prompt over every source's bank and the preservation images."""
        args, device = self.args, self.accelerator.device
        weights = args.source_weights or {}
        losses = {}
        # fp32 even under mixed_precision="bf16": bf16 here cost 15.6 points of source accuracy at the embedded budget
        # (seed 1: 23.50% against 39.10%), bf16 synthesis 0.95 (benchmarks/README.md, "bf16")
        for name, source in self.sources.items():
            banks = self.source_banks[name]
            shares = [args.batch_size // len(banks) + (i < args.batch_size % len(banks)) for i in range(len(banks))]
            x = torch.cat([self._sample(bank, n) for bank, n in zip(banks, shares)]).to(device)
            x = self.distillation_views(x)
            with torch.no_grad():
                teacher = source(x)
            loss = distillation_loss(self.prompted(name, x), teacher, args.temperature)
            losses[name] = weights.get(name, 1.0) * loss
        if args.preservation != "none":
            x = self._sample(self.banks[TARGET_TASK], args.batch_size).to(device)
            with torch.no_grad():
                teacher = self.model.target(x)
            student = self.model(x, task=TARGET_TASK)
            losses[TARGET_TASK] = args.preservation_weight * distillation_loss(student, teacher, args.temperature)
        loss = sum(losses.values())
        self.optimizer.zero_grad(set_to_none=True)
        self.accelerator.backward(loss)
        if self.accelerator.num_processes > 1:
            for ring in self.model.prompt.rings:
                ring.grad = self.accelerator.reduce(ring.grad, reduction="mean")
        self.optimizer.step()
        self.scheduler.step()
        return {f"kd/{name}": value.item() for name, value in losses.items()} | {"kd/total": loss.item()}

    # -- the run ------------------------------------------------------------------------------------------------

    def train(self, resume_from_checkpoint: str | bool | None = None) -> KiOPModel:
        """Run every round (from the last checkpoint, or the one named, if ``resume_from_checkpoint``), writing a
        checkpoint every ``save_every_rounds``; evaluating, saving and pushing are the caller's next steps."""
        args, accelerator = self.args, self.accelerator
        start = time.perf_counter()
        if not self.is_set_up:
            self.setup()
        if args.report_to:
            accelerator.init_trackers(
                "kiop", config={k: v for k, v in args.to_dict().items() if not isinstance(v, (dict, list))}
            )
        if resume_from_checkpoint:  # after the trackers: restoring the random states must come last
            run_state.restore(self, None if resume_from_checkpoint is True else resume_from_checkpoint)
        total = args.rounds * args.kd_steps
        progress = tqdm(
            total=total, initial=self.round * args.kd_steps, disable=not accelerator.is_main_process, desc="KiOP"
        )
        while self.round < args.rounds:
            logs = self.synthesize()
            if self._label_maps_due():
                self.update_label_maps()
            for step in range(args.kd_steps):
                step_logs = self.knowledge_storing_step()
                progress.update(1)
                global_step = self.round * args.kd_steps + step + 1
                if global_step % args.logging_steps == 0 or step == args.kd_steps - 1:
                    progress.set_postfix(loss=f"{step_logs['kd/total']:.4f}")
                    accelerator.log(step_logs | {"lr": self.scheduler.get_last_lr()[0]}, step=global_step)
            logs |= step_logs | {"round": self.round + 1}
            logs |= {f"bank/{name}": len(bank) for name, bank in self.banks.items()}  # images each task draws from
            self.history.append(logs)
            accelerator.log(logs, step=global_step)
            self.round += 1
            if self.round % args.save_every_rounds == 0 or self.round == args.rounds:
                self.save_checkpoint()
        progress.close()
        self.results["train_seconds"] = round(time.perf_counter() - start, 1)
        return self.model

    def evaluate(self) -> dict[str, float]:
        """Accuracy per task on ``eval_sets`` and the target's retention, measured on the main process (other
        ranks keep no accuracies), added to ``results``."""
        if self.accelerator.is_main_process and self.eval_sets:
            self.results |= evaluate_tasks(self.model, self.eval_sets, limit=self.args.eval_limit)
            final_step = self.round * self.args.kd_steps
            self.accelerator.log({f"eval/{key}": value for key, value in self.results.items()}, step=final_step)
        return self.results

    def save_model(self, output_dir: str | os.PathLike | None = None) -> None:
        """Save the prompt (``save_pretrained``), ``results.json`` and the model card with its pictures, together;
        main process only."""
        from .model_card import training_card

        output_dir = Path(output_dir or self.args.output_dir)
        if self.accelerator.is_main_process:
            with staged_save(output_dir) as staging:  # prompt, card and results land together
                self.model.write_files(
                    staging, repo_id=self.hub_model_id, sources=self.sources, card=training_card(self)
                )
                if self.results:
                    settings = {"synthesis": self.args.synthesis_settings()} if self.synthesizers else {}
                    (staging / "results.json").write_text(json.dumps(self.results | settings, indent=2) + "\n")
        self.accelerator.wait_for_everyone()

    @property
    def hub_model_id(self) -> str:
        return self._hub_repo_id or self.args.hub_model_id or Path(self.args.output_dir).resolve().name

    def push_to_hub(self, commit_message: str = "End of training") -> str | None:
        """Create the repo, save the run with a card naming the full repo id, and ``publish`` ``output_dir``
        (prompt, card, pictures, results; no checkpoints or logs). Returns the commit URL on the main process."""
        from .hub import create_prompt_repo, publish

        args, commit = self.args, None
        if self.accelerator.is_main_process:
            self._hub_repo_id = create_prompt_repo(
                self.hub_model_id, private=args.hub_private_repo, token=args.hub_token
            )
        self.save_model(args.output_dir)
        if self.accelerator.is_main_process:
            commit = publish(
                args.output_dir, self.hub_model_id, commit_message=commit_message, token=args.hub_token
            ).commit_url
        self.accelerator.wait_for_everyone()
        return commit

    def save_checkpoint(self) -> None:
        """Everything the next round depends on (``run_state.capture``), as safetensors + JSON, atomically."""
        state = run_state.capture(self)
        write_checkpoint(
            self.args.output_dir, self._next_checkpoint, state, self.accelerator, self.args.save_total_limit
        )
        self._next_checkpoint += 1
