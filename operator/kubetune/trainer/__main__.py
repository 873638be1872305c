import os

import torch

# Without a GPU (the local cluster's real node simulates its GPUs) DeepSpeed must be told to use the CPU before
# it is imported: its accelerator is chosen once, at import.
if not torch.cuda.is_available():
    os.environ.setdefault("DS_ACCELERATOR", "cpu")

from kubetune.trainer.run import main  # noqa: E402

main()
