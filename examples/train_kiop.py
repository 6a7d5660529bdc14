"""Train a KiOP prompt with accelerate: sources -> one prompt around a frozen target.

Single process (CPU or one GPU):
    python examples/train_kiop.py                          # the embedded default on the reference zoo
    accelerate launch examples/train_kiop.py --target org/target --source fashion=org/fashion-classifier \
        --eval fashion=org/fashion-test-set --output-dir outputs/fashion-prompt

Several processes (each rank synthesises its own data; the prompt's gradients are averaged):
    accelerate launch --multi_gpu --num_processes 2 examples/train_kiop.py ...          # 2 GPUs
    accelerate launch --multi_gpu --num_processes 2 examples/train_kiop.py --cpu ...    # 2 CPU processes (gloo)
    torchrun --standalone --nproc_per_node 2 examples/train_kiop.py --cpu ...
(`accelerate launch --cpu --num_processes 2` silently runs one process: use --multi_gpu with --cpu as above.)

Every flag of `kiop-hf train --help` applies; the script and the command run the same code.
"""

import sys

from kiop_hf.cli import main

if __name__ == "__main__":
    main(["train", *sys.argv[1:]])
