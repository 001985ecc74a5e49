"""Where the kernels run: a GPU, or Triton's interpreter on CPU tensors.

Triton picks interpreter or compiler when a kernel is decorated, so this must be decided before
kernels.moe_lora_kernels is imported: TRITON_INTERPRET=1 if set, or when no GPU is present.
"""

import os

import torch

if "TRITON_INTERPRET" not in os.environ and not torch.cuda.is_available():
    os.environ["TRITON_INTERPRET"] = "1"

INTERPRET = os.environ.get("TRITON_INTERPRET", "0") == "1"
