import os

import torch

from kubetune.api import contract

# On simulated GPUs DeepSpeed must be told to use the CPU before it is imported: its accelerator is chosen once,
# at import.
if not torch.cuda.is_available() and os.environ.get(contract.SIMULATED_GPUS_ENV) == "1":
    os.environ.setdefault("DS_ACCELERATOR", "cpu")

from kubetune.trainer.run import main  # noqa: E402

main()
