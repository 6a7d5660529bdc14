"""What serving prompts costs, on the reference zoo's target (letters-resnet10t) with prompts for its sources.

Measured, in images per second (interleaved medians: every job once per repeat, in turn, so the ratios compare
like with like on a shared machine):
- the bare target on canvases of the prompted size (64 px), against one prompt serving one task;
- a mixed batch over 4 prompts and 8 tasks (each prompt's source task and its target task), against the same
  images served task by task in batches of one task each, and against a single-task batch of the same size (the
  target's own tasks use the smaller core canvas, so a mixed batch over the 4 source tasks alone, all on 64 px
  canvases, is measured too);
- the image processor on PIL images of another size (28 px grayscale, as the sources' data come);
- the memory (parameter and buffer bytes) of 1 and 10 prompts on one target, against 10 copies of the target.

    python benchmarks/serving.py [--batch-size 64] [--repeats 7] [--device cpu] [--json serving.json]
"""

from __future__ import annotations

import copy
import json
import statistics
import time
from pathlib import Path

import numpy as np
import torch
from arguments import BenchmarkArguments, benchmark_parser, parse_benchmark_args
from PIL import Image

from kiop_hf import KiOPImageProcessor, KiOPModel, load_classifier
from kiop_hf.zoo.build import REFERENCE_ZOO, build_zoo

TARGET = "letters-resnet10t"
SOURCES = ("fashion-mnist-resnet", "mnist-resnet", "digits-efficientnet", "fashion-mnist-resnet")
RING_SIZES = [36, 64]


def tensor_bytes(module: torch.nn.Module) -> int:
    return sum(t.numel() * t.element_size() for t in [*module.parameters(), *module.buffers()])


def main():
    parser = benchmark_parser(BenchmarkArguments, __doc__)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's, i.e. every core)")
    args = parse_benchmark_args(parser)
    device, n = torch.device(args.device), args.batch_size
    if args.threads:
        torch.set_num_threads(args.threads)

    root = Path(args.zoo_root)
    specs = {spec.name: spec for spec in REFERENCE_ZOO}
    build_zoo(root, [specs[name] for name in {*SOURCES, TARGET}])
    target = load_classifier(root / TARGET)
    model = None
    for index, source_name in enumerate(SOURCES):  # 4 prompts, one source each, rings drawn as after training
        task = specs[source_name].dataset
        prompted = KiOPModel.from_models(
            target, {task: load_classifier(root / source_name)}, image_size=32, ring_sizes=RING_SIZES, seed=index
        )
        torch.manual_seed(index)
        with torch.no_grad():
            for ring in prompted.prompt.rings:
                ring.normal_()
        if model is None:
            model = KiOPModel(prompted.prompt, target, prompt_name="p0")
        else:
            model.add_prompt(prompted.prompt, f"p{index}")
    model.to(device).eval()
    tasks = model.tasks()
    images = torch.rand(n, 3, 32, 32, device=device)
    canvases = torch.rand(n, 3, RING_SIZES[-1], RING_SIZES[-1], device=device)
    mixed_tasks = [tasks[i % len(tasks)] for i in range(n)]
    source_tasks = [task for task in tasks if not task.endswith("/target")]
    one_task = source_tasks[0]
    mixed_sources = [source_tasks[i % len(source_tasks)] for i in range(n)]  # every sample on a 64 px canvas
    by_task = {task: images[[i for i, t in enumerate(mixed_tasks) if t == task]] for task in tasks}

    pil = [Image.fromarray(np.random.default_rng(i).integers(0, 256, (28, 28), dtype=np.uint8), "L") for i in range(n)]
    processor = KiOPImageProcessor(image_size=32, num_channels=3)

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize()

    jobs = {
        "bare target, 64 px canvases": lambda: target(canvases),
        "one prompt, one task": lambda: model(images, task=one_task),
        "mixed batch, 4 prompts x 2 tasks": lambda: model(images, task=mixed_tasks),
        "mixed batch, 4 prompts' source tasks": lambda: model(images, task=mixed_sources),
        "the same images task by task": lambda: [model(batch, task=task) for task, batch in by_task.items()],
        "image processor, 28 px PIL images": lambda: processor(pil),
    }
    times: dict[str, list[float]] = {label: [] for label in jobs}
    with torch.inference_mode():
        for job in jobs.values():  # warm-up
            job()
        for _ in range(args.repeats):
            for label, job in jobs.items():
                sync()
                start = time.perf_counter()
                job()
                sync()
                times[label].append(time.perf_counter() - start)
    throughput = {label: n / statistics.median(values) for label, values in times.items()}

    one = tensor_bytes(KiOPModel(model.prompts["p0"], target))
    ten_prompts = KiOPModel(model.prompts["p0"], target, prompt_name="p0")
    for index in range(1, 10):  # ten prompts loaded on the one target
        ten_prompts.add_prompt(copy.deepcopy(model.prompts[f"p{index % 4}"]), f"copy{index}")
    ten = tensor_bytes(ten_prompts)
    memory = {
        "one prompt on the target (bytes)": one,
        "ten prompts on the target (bytes)": ten,
        "ten copies of the target (bytes)": 10 * one,
    }
    ratios = {
        "mixed batch / single-task batch (throughput)": throughput["mixed batch, 4 prompts x 2 tasks"]
        / throughput["one prompt, one task"],
        "mixed batch / task by task (throughput)": throughput["mixed batch, 4 prompts x 2 tasks"]
        / throughput["the same images task by task"],
        "mixed source tasks / single-task batch (throughput)": throughput["mixed batch, 4 prompts' source tasks"]
        / throughput["one prompt, one task"],
        "prompted single task / bare target (cost)": throughput["bare target, 64 px canvases"]
        / throughput["one prompt, one task"],
        "ten prompts / one prompt (memory)": ten / one,
        "ten copies of the target / ten prompts (memory)": 10 * one / ten,
    }
    print(
        f"device {device}, torch threads {torch.get_num_threads()}, batch {n}, median of {args.repeats}, interleaved"
    )
    for label, value in throughput.items():
        print(f"{label:<44}{value:>10.0f} images/s")
    for label, value in memory.items():
        print(f"{label:<44}{value:>10,}")
    for label, value in ratios.items():
        print(f"{label:<52}{value:>8.3f}")
    if args.json:
        figures = {"device": str(device), "batch_size": n, "images_per_second": throughput, "memory": memory}
        Path(args.json).write_text(json.dumps(figures | {"ratios": ratios}, indent=2) + "\n")


if __name__ == "__main__":
    main()
