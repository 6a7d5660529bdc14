import os
import re
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest
import torch
from datasets import ClassLabel, Dataset, Features
from datasets import Image as ImageFeature
from PIL import Image
from safetensors.torch import load_file

from kiop_hf import KiOPModel, load_classifier
from kiop_hf.checkpointing import checkpoint_folders, latest_checkpoint, next_index
from kiop_hf.model_card import training_card
from kiop_hf.train_job import finish_run
from kiop_hf.trainer import KiOPTrainer
from kiop_hf.training_args import KiOPTrainingArguments

TINY = dict(
    rounds=2,
    synthesis_steps=2,
    kd_steps=3,
    batch_size=8,
    memory_bank_size=64,
    num_negatives=16,
    head_dim=16,
    logging_steps=1,
    use_cpu=True,
)


def tiny_run(transformers_folder, timm_folder, output_dir, images=None, transfer_images=None, **overrides):
    target, source = load_classifier(transformers_folder), load_classifier(timm_folder)
    model = KiOPModel.from_models(target, {"gray": source}, image_size=32, ring_sizes=[36, 40])
    args = KiOPTrainingArguments(output_dir=str(output_dir), **(TINY | overrides))
    return KiOPTrainer(model, {"gray": source}, args, preservation_images=images, transfer_images=transfer_images)


def snapshot(module):
    return {k: v.clone() for k, v in module.state_dict().items()}


@pytest.mark.parametrize("synthesizer", ["cmi", "deepinversion", "fast"])
def test_data_free_run_trains_only_the_prompt_and_saves_a_loadable_prompt(
    synthesizer, transformers_folder, timm_folder, tmp_path
):
    trainer = tiny_run(transformers_folder, timm_folder, tmp_path, synthesizer=synthesizer)
    frozen = {"target": snapshot(trainer.model.target), "source": snapshot(trainer.sources["gray"])}
    before = [ring.detach().clone() for ring in trainer.model.prompt.rings]
    model = trainer.train()
    finish_run(trainer)

    assert all(not torch.equal(a, b) for a, b in zip(before, model.prompt.rings))
    for name, module in (("target", model.target), ("source", trainer.sources["gray"])):
        assert not module.training
        after = module.state_dict()
        assert all(torch.equal(after[k], v) for k, v in frozen[name].items()), f"the frozen {name} changed"
    # BF: one bank per inverted model (source and target), one best batch per round each
    assert {name: len(bank) for name, bank in trainer.banks.items()} == {"gray": 16, "target": 16}
    assert set(trainer.history[-1]) >= {"kd/gray", "kd/target", "kd/total", "synthesis/gray/bn", "round"}

    assert {"config.json", "model.safetensors", "README.md"} <= {p.name for p in tmp_path.iterdir()}
    assert ("Up to 100x Faster Data-Free" in (tmp_path / "README.md").read_text()) == (synthesizer == "fast")  # cited
    captions = training_card(trainer)["sample_labels"]["gray"]  # the sample grid names each image's class
    assert len(captions) == 16 and all(re.fullmatch(r"class_\d \d+%", caption) for caption in captions)
    reloaded = KiOPModel.from_pretrained(tmp_path)
    images = torch.rand(2, 1, 32, 32)
    assert torch.equal(reloaded(images, task="gray"), model(images, task="gray"))


def test_bank_min_confidence_keeps_only_the_images_the_source_is_sure_of(transformers_folder, timm_folder, tmp_path):
    images = torch.rand(16, 1, 32, 32)
    source = load_classifier(timm_folder)
    confidence = source(images).softmax(-1).amax(-1)
    threshold = confidence.median().item()
    trainer = tiny_run(transformers_folder, timm_folder, tmp_path, bank_min_confidence=threshold)
    assert torch.equal(trainer._sure_of("gray", images), images[confidence >= threshold])
    assert torch.equal(trainer._sure_of("target", images), images)  # the target's bank is not filtered

    trainer = tiny_run(transformers_folder, timm_folder, tmp_path / "sure", synthesizer="fast", bank_min_confidence=1)
    trainer.setup()
    trainer.synthesize()  # no image reaches probability 1: each round keeps its surest one
    assert len(trainer.banks["gray"]) == 1 and len(trainer.banks["target"]) > 1
    with pytest.raises(ValueError, match="bank_min_confidence must be between 0 and 1, got 1.5"):
        KiOPTrainingArguments(output_dir=str(tmp_path), bank_min_confidence=1.5)


def random_image_dataset(n=24, seed=0):
    rng = np.random.default_rng(seed)
    images = [Image.fromarray(rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)) for _ in range(n)]
    features = Features({"image": ImageFeature(), "label": ClassLabel(names=["x", "y"])})
    return Dataset.from_dict({"image": images, "label": [i % 2 for i in range(n)]}, features=features)


def image_folder(dataset, folder, count):
    (folder / "train").mkdir(parents=True)
    for i, image in enumerate(dataset["image"][:count]):
        image.save(folder / "train" / f"{i}.png")
    return folder


def test_preservation_with_real_unlabelled_images_from_a_dataset_or_an_image_folder(
    transformers_folder, timm_folder, tmp_path
):
    dataset = random_image_dataset()
    trainer = tiny_run(
        transformers_folder, timm_folder, tmp_path / "dataset", preservation="B", images=dataset, rounds=1
    )
    trainer.train()
    assert len(trainer.banks["target"]) == 24  # the real images, resized to the prompt's 32x32 input
    assert trainer.banks["target"].images.shape[1:] == (3, 32, 32)
    assert "target" not in trainer.synthesizers  # B mode does not invert the target

    folder = image_folder(dataset, tmp_path / "images", 10)
    trainer = tiny_run(
        transformers_folder, timm_folder, tmp_path / "folder", preservation="B", images=folder, rounds=1
    )
    trainer.train()
    assert len(trainer.banks["target"]) == 10


def test_an_unlabelled_image_folder_as_transfer_set_replaces_source_synthesis(
    transformers_folder, timm_folder, tmp_path
):
    folder = image_folder(random_image_dataset(seed=1), tmp_path / "unlabelled", 12)
    trainer = tiny_run(
        transformers_folder,
        timm_folder,
        tmp_path / "run",
        transfer_images=folder,
        transfer_data="unlabelled",
        rounds=1,
    )
    before = [ring.detach().clone() for ring in trainer.model.prompt.rings]
    model = trainer.train()
    finish_run(trainer)

    assert set(trainer.synthesizers) == {"target"}  # only the target is inverted (BF); the source is read from images
    (bank,) = trainer.source_banks["gray"]
    assert bank.images.shape == (12, 1, 32, 32)  # converted to the source's own channels
    assert not torch.equal(before[1], model.prompt.rings[1])
    reloaded = KiOPModel.from_pretrained(tmp_path / "run")
    assert reloaded.config.data_regime == {"transfer": "unlabelled", "preservation": "BF"}
    assert "real unlabelled images" in (tmp_path / "run" / "README.md").read_text()


def test_mixed_transfer_splits_each_batch_between_synthetic_and_real_images(
    transformers_folder, timm_folder, tmp_path
):
    images = torch.randint(0, 256, (10, 1, 32, 32), dtype=torch.uint8)
    trainer = tiny_run(
        transformers_folder, timm_folder, tmp_path, transfer_images={"gray": images}, transfer_data="mixed", rounds=1
    )
    trainer.train()
    synthetic, real = trainer.source_banks["gray"]
    assert synthetic is trainer.banks["gray"] and len(synthetic) == 8
    assert torch.equal(real.images, images)


def test_transfer_images_are_required_and_must_name_the_sources(transformers_folder, timm_folder, tmp_path):
    with pytest.raises(ValueError, match='transfer_data="unlabelled" needs transfer_images'):
        tiny_run(transformers_folder, timm_folder, tmp_path, transfer_data="unlabelled")
    with pytest.raises(ValueError, match=r"missing \['gray'\], unknown \['grey'\]"):
        tiny_run(transformers_folder, timm_folder, tmp_path, transfer_data="mixed", transfer_images={"grey": "x"})
    with pytest.raises(ValueError, match='transfer_data="synthetic" would ignore them'):
        tiny_run(
            transformers_folder, timm_folder, tmp_path, transfer_images=torch.zeros(2, 1, 32, 32, dtype=torch.uint8)
        )
    with pytest.raises(ValueError, match="transfer_data must be one of"):
        KiOPTrainingArguments(output_dir=str(tmp_path), transfer_data="real")


def test_b_mode_without_images_and_mismatched_sources_are_refused(transformers_folder, timm_folder, tmp_path):
    with pytest.raises(ValueError, match='preservation="B" needs preservation_images'):
        tiny_run(transformers_folder, timm_folder, tmp_path, preservation="B")
    target, source = load_classifier(transformers_folder), load_classifier(timm_folder)
    model = KiOPModel.from_models(target, {"gray": source}, image_size=32, ring_sizes=[36, 40])
    with pytest.raises(ValueError, match=r"serves sources \['gray'\]"):
        KiOPTrainer(model, {"other": source}, KiOPTrainingArguments(output_dir=str(tmp_path)))
    with pytest.raises(ValueError, match=r"eval_sets names unknown tasks \['grey'\]"):
        KiOPTrainer(model, {"gray": source}, KiOPTrainingArguments(output_dir=str(tmp_path)), eval_sets={"grey": "x"})
    with pytest.raises(ValueError, match="preservation must be one of"):
        KiOPTrainingArguments(output_dir=str(tmp_path), preservation="C")


@pytest.mark.parametrize("synthesizer", [dict(synthesizer="fast"), dict(synthesizer="cmi", reset_generator=False)])
def test_a_run_resumed_from_a_middle_checkpoint_ends_like_the_straight_run(
    synthesizer, transformers_folder, timm_folder, tmp_path
):
    """Everything a synthesizer keeps across rounds (a kept generator, fast's meta weights and BN averages) and a
    bounded bank's ring buffer and newest batch are in the checkpoint, and loading them draws no random numbers."""
    import shutil

    run = synthesizer | dict(rounds=4, data_bank_size=12, recent_share=0.5, save_total_limit=None)
    straight = tiny_run(transformers_folder, timm_folder, tmp_path / "straight", **run)
    straight.train()
    shutil.copytree(
        tmp_path / "straight" / "checkpoints" / "checkpoint_1", tmp_path / "resumed" / "checkpoints" / "checkpoint_1"
    )
    resumed = tiny_run(transformers_folder, timm_folder, tmp_path / "resumed", **run)
    resumed.train(resume_from_checkpoint=True)
    assert len(resumed.banks["gray"]) == 12
    assert all(torch.equal(a, b) for a, b in zip(straight.model.prompt.rings, resumed.model.prompt.rings))
    assert torch.equal(straight.banks["gray"].images, resumed.banks["gray"].images)


@pytest.fixture
def fresh_accelerator_state():
    """accelerate fixes the precision once per process; let this test choose its own and leave none behind."""
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state(reset_partial_state=True)
    yield
    AcceleratorState._reset_state(reset_partial_state=True)


def test_mixed_precision_autocasts_the_frozen_passes_and_keeps_the_prompt_in_fp32(
    transformers_folder, timm_folder, tmp_path, fresh_accelerator_state
):
    trainer = tiny_run(
        transformers_folder, timm_folder, tmp_path, synthesizer="fast", mixed_precision="bf16", rounds=1
    )
    model = trainer.train()
    assert trainer.accelerator.mixed_precision == "bf16"
    assert all(ring.dtype == torch.float32 for ring in model.prompt.rings)
    assert trainer.banks["gray"].images.dtype == torch.float32
    assert all(torch.isfinite(torch.tensor(v)) for v in trainer.history[-1].values())
    with pytest.raises(ValueError, match="mixed_precision must be one of"):
        KiOPTrainingArguments(output_dir=str(tmp_path), mixed_precision="fp16")  # its gradients would need scaling


RUN_SCRIPT = textwrap.dedent(
    """
    import sys
    from kiop_hf import KiOPModel, load_classifier
    from kiop_hf.train_job import finish_run
    from kiop_hf.trainer import KiOPTrainer
    from kiop_hf.training_args import KiOPTrainingArguments

    target_dir, source_dir, output_dir, rounds, resume = sys.argv[1:6]
    target, source = load_classifier(target_dir), load_classifier(source_dir)
    model = KiOPModel.from_models(target, {"gray": source}, image_size=32, ring_sizes=[36, 40])
    args = KiOPTrainingArguments(
        output_dir=output_dir, rounds=int(rounds), synthesis_steps=4, kd_steps=20, batch_size=8,
        memory_bank_size=64, num_negatives=16, head_dim=16, use_cpu=True, save_total_limit=2,
    )
    trainer = KiOPTrainer(model, {"gray": source}, args)
    trainer.train(resume_from_checkpoint=resume == "resume")
    finish_run(trainer)
    """
)


def run_script(*args):
    return subprocess.Popen(
        [sys.executable, "-c", RUN_SCRIPT, *map(str, args)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )


def kill_when(process, ready, timeout: float = 120.0) -> bool:
    """SIGKILL ``process`` as soon as ``ready()`` holds (polled every millisecond); False if it ended first."""
    deadline = time.time() + timeout
    while not ready() and process.poll() is None and time.time() < deadline:
        time.sleep(0.001)
    if process.poll() is not None:
        return False
    os.kill(process.pid, signal.SIGKILL)
    assert process.wait() == -signal.SIGKILL
    return True


@pytest.mark.slow
def test_a_run_killed_at_many_points_resumes_each_time_and_ends_like_an_uninterrupted_one(
    transformers_folder, timm_folder, tmp_path
):
    """Kills inside checkpoint writing (the temporary folder exists), between checkpoints, right after the
    newest checkpoint landed and inside the final save; every restart resumes from the last complete checkpoint."""
    rounds = 6
    assert run_script(transformers_folder, timm_folder, tmp_path / "straight", rounds, "fresh").wait() == 0
    run_dir = tmp_path / "killed"
    checkpoints = run_dir / "checkpoints"

    def writing(index, started):  # inside the write (or, if it was quicker than one poll, right after it)
        return lambda: (
            (checkpoints / f".tmp-checkpoint_{index}").exists() or (checkpoints / f"checkpoint_{index}").exists()
        )

    def landed(index, started):
        return lambda: (checkpoints / f"checkpoint_{index}").exists()

    def after_3_seconds(index, started):  # while loading or resuming
        return lambda: time.time() - started > 3.0

    def final_save(index, started):
        return lambda: (run_dir / "config.json").exists()

    triggers = [writing, landed, writing, after_3_seconds, landed, writing, final_save]
    kills = 0
    for trigger in triggers:
        mode = "resume" if latest_checkpoint(run_dir) is not None else "fresh"
        process = run_script(transformers_folder, timm_folder, run_dir, rounds, mode)
        kills += kill_when(process, trigger(next_index(run_dir), time.time()))
        for folder in checkpoint_folders(run_dir):  # whatever is named a checkpoint is complete
            assert sorted(p.name for p in folder.iterdir()) == ["run_state_0.json", "run_state_0.safetensors"]
        if kills == 1:
            assert not (run_dir / "model.safetensors").exists()  # it really died before the end
    assert kills == len(triggers), f"only {kills} of {len(triggers)} kills landed before the run ended"
    assert run_script(transformers_folder, timm_folder, run_dir, rounds, "resume").wait() == 0
    assert sorted(p.name for p in checkpoints.iterdir()) == [
        "checkpoint_4",
        "checkpoint_5",
    ]  # the last two, no temporary folder
    straight = load_file(tmp_path / "straight" / "model.safetensors")
    resumed = load_file(run_dir / "model.safetensors")
    assert all(torch.equal(straight[k], resumed[k]) for k in straight)


def test_resuming_a_run_folder_runs_no_pickle_and_refuses_another_run(transformers_folder, timm_folder, tmp_path):
    """A copied run folder may hold crafted pickles (accelerate's file names): resuming never loads them. A
    checkpoint of a different schedule, or a corrupt run state, is refused with a message naming the problem."""
    import pickle
    import shutil

    trainer = tiny_run(transformers_folder, timm_folder, tmp_path / "run", rounds=1)
    trainer.train()
    folder = latest_checkpoint(tmp_path / "run")
    assert sorted(p.name for p in folder.iterdir()) == ["run_state_0.json", "run_state_0.safetensors"]
    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    for name in ("custom_checkpoint_0.pkl", "random_states_0.pkl", "optimizer.bin", "scheduler.bin"):
        (folder / name).write_bytes(pickle.dumps(Payload()))
    tiny_run(transformers_folder, timm_folder, tmp_path / "run", rounds=1).train(resume_from_checkpoint=True)
    assert not marker.exists()

    with pytest.raises(ValueError, match=r"belongs to a different run \(kd_steps: checkpoint 3, now 4\)"):
        tiny_run(transformers_folder, timm_folder, tmp_path / "run", rounds=1, kd_steps=4).train(
            resume_from_checkpoint=True
        )
    with pytest.raises(ValueError, match=r"rounds: checkpoint 1, now 2\); resume with the same settings"):
        tiny_run(transformers_folder, timm_folder, tmp_path / "run", rounds=2).train(resume_from_checkpoint=True)
    longer = tiny_run(transformers_folder, timm_folder, tmp_path / "run", rounds=2, resume_overrides=["rounds"])
    finished = [ring.detach().clone() for ring in trainer.model.prompt.rings]
    longer.train(resume_from_checkpoint=True)  # extending a finished run is allowed when asked for
    assert [logs["round"] for logs in longer.history] == [1, 2]
    assert longer.scheduler.get_last_lr()[0] == 0.0 and longer.history[-1]["kd/total"] > 0
    assert not torch.equal(longer.model.prompt.rings[0], finished[0])  # the extension trained: its rate was not 0
    shutil.copytree(folder, tmp_path / "corrupt")
    (tmp_path / "corrupt" / "run_state_0.json").write_text('{"run/round": 1, "run/hist')
    with pytest.raises(ValueError, match="run_state_0.json is not valid JSON"):
        tiny_run(transformers_folder, timm_folder, tmp_path / "run", rounds=1).train(
            resume_from_checkpoint=str(tmp_path / "corrupt")
        )


TWO_PROCESS_SCRIPT = textwrap.dedent(
    """
    import sys
    import torch
    from safetensors.torch import save_file
    from kiop_hf import KiOPModel, load_classifier
    from kiop_hf.train_job import finish_run
    from kiop_hf.trainer import KiOPTrainer
    from kiop_hf.training_args import KiOPTrainingArguments

    target_dir, source_dir, output_dir, seed_per_process = sys.argv[1:5]
    target, source = load_classifier(target_dir), load_classifier(source_dir)
    model = KiOPModel.from_models(target, {"gray": source}, image_size=32, ring_sizes=[36, 40])
    args = KiOPTrainingArguments(
        output_dir=output_dir, rounds=1, synthesis_steps=2, kd_steps=3, batch_size=8, memory_bank_size=64,
        num_negatives=16, head_dim=16, use_cpu=True, seed_per_process=seed_per_process == "yes",
    )
    trainer = KiOPTrainer(model, {"gray": source}, args)
    rank = trainer.accelerator.process_index
    trainer.train()
    finish_run(trainer)
    rings = torch.cat([ring.detach().flatten() for ring in model.prompt.rings])
    bank = trainer.banks["gray"].images.contiguous()
    save_file({"rings": rings, "bank": bank}, f"{output_dir}/rank{rank}.safetensors")
    """
)


def run_processes(script, folders, output, processes, seed_per_process):
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(processes)]
    command = [*launcher, str(script), *map(str, folders), str(output), "yes" if seed_per_process else "no"]
    result = subprocess.run(
        command, capture_output=True, text=True, timeout=300, env=os.environ | {"OMP_NUM_THREADS": "1"}
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return [load_file(output / f"rank{rank}.safetensors") for rank in range(processes)]


@pytest.mark.slow
def test_two_processes_synthesise_different_data_and_keep_one_prompt(transformers_folder, timm_folder, tmp_path):
    script = tmp_path / "two_processes.py"
    script.write_text(TWO_PROCESS_SCRIPT)
    rank0, rank1 = run_processes(
        script, (transformers_folder, timm_folder), tmp_path / "out", 2, seed_per_process=True
    )
    assert (tmp_path / "out" / "model.safetensors").is_file()  # written once, by the main process
    assert torch.equal(rank0["rings"], rank1["rings"]), "ranks ended with different prompts"
    assert not torch.equal(rank0["bank"], rank1["bank"]), "both ranks synthesised the same data"

    # The same data on both ranks: averaged gradients equal one process's, so the prompt is bit-identical.
    same = run_processes(script, (transformers_folder, timm_folder), tmp_path / "same", 2, seed_per_process=False)
    (single,) = run_processes(
        script, (transformers_folder, timm_folder), tmp_path / "single", 1, seed_per_process=False
    )
    assert torch.equal(same[0]["rings"], single["rings"]) and torch.equal(same[1]["bank"], single["bank"])


def test_resume_falls_back_past_a_checkpoint_damaged_after_it_landed(transformers_folder, timm_folder, tmp_path):
    run = tmp_path / "run"
    tiny_run(transformers_folder, timm_folder, run, rounds=2, save_total_limit=None).train()
    older, newest = checkpoint_folders(run)[-2:]
    data = (newest / "run_state_0.safetensors").read_bytes()
    (newest / "run_state_0.safetensors").write_bytes(data[: len(data) // 2])  # a disk's doing, after it landed
    resumed = tiny_run(transformers_folder, timm_folder, run, rounds=2, save_total_limit=None)
    with pytest.warns(UserWarning, match=rf"checkpoint {re.escape(str(newest))} is damaged .*resuming from the one"):
        resumed.train(resume_from_checkpoint=True)
    assert [logs["round"] for logs in resumed.history] == [1, 2]  # round 2 ran again from the round-1 checkpoint
    assert older.name == "checkpoint_0"
    (older / "run_state_0.json").write_text("{")
    for folder in checkpoint_folders(run)[2:]:
        (folder / "run_state_0.json").write_text("{")
    with pytest.raises(ValueError, match="every checkpoint under .* is damaged"), pytest.warns(UserWarning):
        tiny_run(transformers_folder, timm_folder, run, rounds=2).train(resume_from_checkpoint=True)
    with pytest.raises(ValueError, match="run_state_0.safetensors is not a readable safetensors file"):
        tiny_run(transformers_folder, timm_folder, run, rounds=2).train(resume_from_checkpoint=str(newest))


def test_report_to_tensorboard_logs_round_losses_bank_sizes_and_final_accuracies(
    transformers_folder, timm_folder, tmp_path, capsys, monkeypatch
):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    import kiop_hf.trainer

    monkeypatch.setattr(kiop_hf.trainer, "LONG_SYNTHESIS_ROUND", 2)  # rounds this long show their own bar
    images, labels = torch.rand(6, 1, 32, 32), torch.arange(6) % 10
    trainer = tiny_run(transformers_folder, timm_folder, tmp_path, report_to=["tensorboard"])
    trainer.eval_sets = {"gray": (images, labels)}
    trainer.train()
    finish_run(trainer)
    assert "CMISynthesizer" in capsys.readouterr().err
    for events in {path.parent for path in (tmp_path / "runs").rglob("events.out.tfevents.*")}:
        accumulator = EventAccumulator(str(events))
        accumulator.Reload()
        if "kd/total" in accumulator.Tags()["scalars"]:
            break
    scalars = set(accumulator.Tags()["scalars"])
    assert {"kd/total", "kd/gray", "lr", "synthesis/gray/bn", "bank/gray", "bank/target", "eval/gray"} <= scalars
    assert [event.value for event in accumulator.Scalars("bank/gray")] == [8.0, 16.0]  # one batch per round
    assert accumulator.Scalars("eval/gray")[0].value == pytest.approx(trainer.results["gray"])
