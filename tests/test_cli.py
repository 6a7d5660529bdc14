import json
import re
from dataclasses import fields

import numpy as np
import pytest
import torch
from datasets import ClassLabel, Dataset, DatasetDict, Features
from datasets import Image as ImageFeature
from PIL import Image

from kiop_hf import KiOPModel
from kiop_hf.cli import main
from kiop_hf.data import dataset_tensors
from kiop_hf.evaluation import evaluate_tasks
from kiop_hf.training_args import KiOPTrainingArguments


def labelled_dataset(folder, num_classes, mode, n=20, seed=0):
    rng = np.random.default_rng(seed)
    shape = (32, 32) if mode == "L" else (32, 32, 3)
    images = [Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8), mode) for _ in range(n)]
    features = Features({"image": ImageFeature(), "label": ClassLabel(num_classes=num_classes)})
    split = Dataset.from_dict({"image": images, "label": [i % num_classes for i in range(n)]}, features=features)
    DatasetDict(train=split, test=split).save_to_disk(folder)
    return folder


def test_train_then_evaluate_from_the_command_line(transformers_folder, timm_folder, tmp_path, capsys):
    source_test = labelled_dataset(tmp_path / "gray_test", 10, "L")
    target_test = labelled_dataset(tmp_path / "rgb_test", 12, "RGB")
    output = tmp_path / "prompt"
    main(
        [
            "train",
            "--target",
            str(transformers_folder),
            "--source",
            f"gray={timm_folder}",
            "--eval",
            f"gray={source_test}",
            "--eval",
            f"target={target_test}",
            "--output-dir",
            str(output),
            "--ring-sizes",
            "36",
            "40",
            "--rounds",
            "1",
            "--synthesizer",
            "fast",
            "--kd-steps",
            "2",
            "--batch-size",
            "8",
            "--cpu",
        ]
    )
    results = json.loads((output / "results.json").read_text())
    assert set(results) >= {"gray", "target", "target/unprompted", "target/retention_drop", "train_seconds"}
    # synthesis_steps was left to the method: the fast synthesizer's own 5 steps ran, and both files say so
    assert results["synthesis"]["synthesis_steps"] == 5 and results["synthesis"]["synthesis_lr"] == 0.01
    card = (output / "README.md").read_text()
    assert "library_name: kiop_hf" in card and "| gray |" in card
    assert re.search(r"synthesis_steps\W+5\b", card)

    main(["evaluate", str(output), "--eval", f"gray={source_test}"])
    printed = capsys.readouterr().out
    model = KiOPModel.from_pretrained(output)
    expected = evaluate_tasks(model, {"gray": source_test})["gray"]
    assert f"gray: {expected:.4f}" in printed
    assert expected == results["gray"]


def test_evaluate_tasks_counts_correct_top1_predictions(transformers_folder, timm_folder, tmp_path):
    from kiop_hf import load_classifier

    target, source = load_classifier(transformers_folder), load_classifier(timm_folder)
    model = KiOPModel.from_models(target, {"gray": source}, image_size=32, ring_sizes=[36, 40])
    images, labels = dataset_tensors(labelled_dataset(tmp_path / "d", 10, "L"), 32, 1, "test")
    predictions = model(images.float() / 255, task="gray").argmax(-1)
    rgb_images = images.expand(-1, 3, -1, -1)
    results = evaluate_tasks(model, {"gray": (images, labels), "target": (rgb_images, labels)})
    assert results["gray"] == (predictions == labels).sum().item() / len(labels)
    own = (target(rgb_images.float() / 255).argmax(-1) == labels).sum().item() / len(labels)
    assert results["target/unprompted"] == own
    assert torch.isclose(torch.tensor(results["target/retention_drop"]), torch.tensor(100 * (own - results["target"])))


def test_train_help_lists_every_argument_with_its_help(capsys):
    from kiop_hf.train_job import KiOPScriptArguments
    from kiop_hf.training_args import KiOPTrainingArguments

    with pytest.raises(SystemExit):
        main(["train", "--help"])
    printed = " ".join(capsys.readouterr().out.split())
    for dataclass in (KiOPScriptArguments, KiOPTrainingArguments):
        for f in fields(dataclass):
            assert f"--{f.name}" in printed, f.name
            assert " ".join(f.metadata["help"].split()) in printed, f.name


def test_a_yaml_config_runs_the_same_job_as_the_flags(transformers_folder, timm_folder, tmp_path):
    from safetensors.torch import load_file

    flags = [
        "--target",
        str(transformers_folder),
        "--source",
        f"gray={timm_folder}",
        "--ring-sizes",
        "36",
        "40",
        "--rounds",
        "1",
        "--synthesis_steps",
        "2",
        "--kd_steps",
        "2",
        "--batch_size",
        "8",
        "--cpu",
    ]
    main(["train", *flags, "--output-dir", str(tmp_path / "flags")])
    config = tmp_path / "run.yaml"
    config.write_text(
        f"target: {transformers_folder}\nsource:\n  gray: {timm_folder}\nring_sizes: [36, 40]\nrounds: 1\n"
        f"synthesis_steps: 2\nkd_steps: 2\nbatch_size: 4\nuse_cpu: true\noutput_dir: {tmp_path / 'yaml'}\n"
    )
    main(["train", "--config", str(config), "--batch_size", "8"])  # a flag overrides the file
    from_yaml, from_flags = (load_file(tmp_path / run / "model.safetensors") for run in ("yaml", "flags"))
    assert from_yaml.keys() == from_flags.keys()
    assert all(torch.equal(from_yaml[key], from_flags[key]) for key in from_flags)
    config.write_text("rounds: 1\nround_count: 3\n")
    with pytest.raises(SystemExit, match=r"sets unknown arguments \['round_count'\]"):
        main(["train", "--config", str(config)])


def test_the_embedded_default_names_its_seed_and_zoo_build_beside_the_benchmark(
    transformers_folder, timm_folder, tmp_path
):
    from kiop_hf.train_job import (
        DEFAULT_SCHEDULE,
        EMBEDDED_DEFAULT_BENCHMARK,
        KiOPScriptArguments,
        embedded_default_summary,
    )
    from kiop_hf.zoo.build import weights_digest

    script = KiOPScriptArguments(target=str(transformers_folder), source=[f"gray={timm_folder}"])
    digest = weights_digest(timm_folder, transformers_folder)
    run = KiOPTrainingArguments(output_dir=str(tmp_path), **(DEFAULT_SCHEDULE | {"seed": 3}))
    text = embedded_default_summary(script, run, {"gray": 0.5})
    assert text.startswith(f"seed 3 on zoo build {digest}: compare runs over several seeds")  # a build not measured
    EMBEDDED_DEFAULT_BENCHMARK[digest] = ("a test build", [0, 1], 0.3, 0.02, 0.4)
    try:
        text = embedded_default_summary(script, run, {"gray": 0.5})
        assert "(a test build in benchmarks/README.md): gray 50.00% here" in text
        assert (
            "mean over seeds [0, 1] at this budget is 30.00% (sd 2.00%), 0.75 of the real-data prompt's 40.00%" in text
        )
        other = KiOPTrainingArguments(output_dir=str(tmp_path), **(DEFAULT_SCHEDULE | {"mixed_precision": "bf16"}))
        assert "compare runs over several seeds" in embedded_default_summary(script, other, {"gray": 0.5})
    finally:
        del EMBEDDED_DEFAULT_BENCHMARK[digest]


def test_a_plain_module_source_trains_from_the_command_line_and_a_config_file(transformers_folder, tmp_path):
    from safetensors.torch import save_file

    from .helpers import TinyCNN

    torch.manual_seed(0)
    weights = tmp_path / "cnn.safetensors"
    save_file(TinyCNN(in_channels=1, num_classes=4).state_dict(), weights)
    spec = {
        "module": "tests.helpers:TinyCNN",
        "kwargs": {"in_channels": 1, "num_classes": 4},
        "weights": str(weights),
        "image_size": 32,
        "mean": [0.3],
        "std": [0.25],
        "class_names": ["a", "b", "c", "d"],
    }
    tiny = ["--rounds", "1", "--synthesizer", "fast", "--kd-steps", "2", "--batch-size", "8", "--cpu"]
    output = tmp_path / "flags"
    main(["train", "--target", str(transformers_folder), "--source", f"cnn={json.dumps(spec)}",
          "--ring-sizes", "36", "40", "--output-dir", str(output), *tiny])  # fmt: skip
    model = KiOPModel.from_pretrained(output)
    assert model.class_names("cnn") == ["a", "b", "c", "d"]
    assert model.config.source("cnn")["num_channels"] == 1

    config = tmp_path / "run.yaml"
    config.write_text(
        json.dumps({"target": str(transformers_folder), "source": {"cnn": spec}, "ring_sizes": [36, 40]})
    )
    main(["train", "--config", str(config), "--output-dir", str(tmp_path / "yaml"), *tiny])
    assert KiOPModel.from_pretrained(tmp_path / "yaml").class_names("cnn") == ["a", "b", "c", "d"]

    save_file(TinyCNN(in_channels=3, num_classes=4).state_dict(), tmp_path / "rgb.safetensors")
    for change, message in [
        ({"weights": str(tmp_path / "rgb.safetensors")}, "does not fit the network 'tests.helpers:TinyCNN'"),
        ({"weights": str(tmp_path / "cnn.pt")}, "weights must be an existing .safetensors file"),
        ({"module": "tests.helpers:Nope"}, "cannot import 'tests.helpers:Nope'"),
        ({"colour": "red"}, "a plain-module source takes the fields"),
    ]:
        with pytest.raises((ValueError, SystemExit), match=message):
            main(["train", "--target", str(transformers_folder), "--source", f"cnn={json.dumps(spec | change)}",
                  "--output-dir", str(tmp_path / "bad"), *tiny])  # fmt: skip
