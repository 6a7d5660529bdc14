"""Bad training inputs: each is refused before any work starts, with the field's name and what it takes."""

import math

import pytest
import torch

from kiop_hf import KiOPModel, load_classifier
from kiop_hf.cli import main
from kiop_hf.trainer import KiOPTrainer
from kiop_hf.training_args import KiOPTrainingArguments

ARGUMENT_CATALOGUE = [
    (dict(temperature=math.nan), "temperature must be a finite number > 0, got nan"),
    (dict(temperature=-4.0), "temperature must be a finite number > 0, got -4.0"),
    (dict(learning_rate=math.inf), "learning_rate must be a finite number > 0, got inf"),
    (dict(adv_weight=-0.5), "adv_weight must be a finite number >= 0, got -0.5"),
    (dict(bn_weight="1"), "bn_weight must be a finite number >= 0, got '1'"),
    (dict(preservation_weight=math.nan), "preservation_weight must be a finite number >= 0, got nan"),
    (dict(logging_steps=0), "logging_steps must be an integer >= 1, got 0"),
    (dict(synthesis_steps=0), "synthesis_steps must be at least 1 when a model is inverted, got 0"),
    (dict(rounds=2.5), "rounds must be an integer >= 1, got 2.5"),
    (dict(rounds=True), "rounds must be an integer >= 1, got True"),
    (dict(save_total_limit=0), "save_total_limit must be an integer >= 1 or None, got 0"),
    (dict(eval_limit=0), "eval_limit must be an integer >= 1 or None, got 0"),
    (dict(data_bank_size=-1), "data_bank_size must be an integer >= 1 or None, got -1"),
    (dict(momentum=1.0), r"momentum must be in \[0, 1\), got 1.0"),
    (dict(recent_share=1.5), "recent_share must be between 0 and 1, got 1.5"),
    (dict(synthesizer="gan"), "synthesizer must be one of"),
    (dict(mixed_precision="fp8"), "mixed_precision must be one of"),
    (dict(resume_overrides=["kd_steps"]), r"resume_overrides may name only \['rounds'\], got \['kd_steps'\]"),
    (dict(source_weights={"gray": math.inf}), r"source_weights\['gray'\] must be a finite number >= 0, got inf"),
]


@pytest.mark.parametrize("arguments, message", ARGUMENT_CATALOGUE)
def test_bad_training_arguments_name_the_field(arguments, message, tmp_path):
    with pytest.raises(ValueError, match=message):
        KiOPTrainingArguments(output_dir=str(tmp_path), **arguments)


def test_a_run_that_synthesises_nothing_may_have_no_synthesis_steps(tmp_path):
    KiOPTrainingArguments(output_dir=str(tmp_path), synthesis_steps=0, transfer_data="unlabelled", preservation="B")


@pytest.fixture
def models(transformers_folder, timm_folder):
    target, source = load_classifier(transformers_folder), load_classifier(timm_folder)
    return KiOPModel.from_models(target, {"gray": source}, image_size=32, ring_sizes=[36, 40]), {"gray": source}


def test_trainer_inputs_that_would_be_ignored_or_name_unknown_tasks_are_refused(models, tmp_path):
    model, sources = models
    args = KiOPTrainingArguments(output_dir=str(tmp_path), use_cpu=True, source_weights={"grey": 2.0})
    with pytest.raises(ValueError, match=r"source_weights names unknown tasks \['grey'\]; the sources are \['gray'\]"):
        KiOPTrainer(model, sources, args)
    images = torch.zeros(4, 3, 32, 32, dtype=torch.uint8)
    args = KiOPTrainingArguments(output_dir=str(tmp_path), use_cpu=True, preservation="BF")
    with pytest.raises(ValueError, match='preservation_images were given but preservation="BF" would ignore them'):
        KiOPTrainer(model, sources, args, preservation_images=images)


def test_a_source_named_twice_on_the_command_line_is_refused(transformers_folder, timm_folder, tmp_path):
    flags = ["--source", f"gray={timm_folder}", "--source", f"gray={transformers_folder}"]
    with pytest.raises(SystemExit, match="--source names 'gray' twice"):
        main(["train", "--target", str(transformers_folder), *flags, "--output-dir", str(tmp_path)])


def unlabelled_dataset(folder, n=4):
    from datasets import Dataset, DatasetDict, Features
    from datasets import Image as ImageFeature
    from PIL import Image

    images = [Image.new("L", (32, 32)) for _ in range(n)]
    split = Dataset.from_dict({"image": images}, features=Features({"image": ImageFeature()}))
    DatasetDict(train=split, test=split).save_to_disk(folder)
    return folder


def test_eval_sets_are_opened_and_checked_before_training(models, tmp_path):
    from .test_cli import labelled_dataset

    model, sources = models
    args = KiOPTrainingArguments(output_dir=str(tmp_path / "run"), use_cpu=True)
    bad_sets = [
        ({"gray": str(tmp_path / "no" / "such" / "set")}, FileNotFoundError, "no such folder"),
        ({"gray": unlabelled_dataset(tmp_path / "unlabelled")}, ValueError, "has no 'label' column"),
        (
            {"gray": labelled_dataset(tmp_path / "twelve", 12, "L")},
            ValueError,
            "has label 10; the task has 10 classes",
        ),
        (
            {"gray": (torch.zeros(3, 1, 32, 32), torch.zeros(2, dtype=torch.long))},
            ValueError,
            "3 images need as many labels",
        ),
        ({"gray": (torch.zeros(0, 1, 32, 32), torch.zeros(0, dtype=torch.long))}, ValueError, "is empty"),
    ]
    for eval_sets, error, message in bad_sets:
        with pytest.raises(error, match=message):
            KiOPTrainer(model, sources, args, eval_sets=eval_sets)
    assert not (tmp_path / "run").exists()  # refused before anything was written
