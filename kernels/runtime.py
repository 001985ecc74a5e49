"""Where the kernels run: a GPU, or Triton's interpreter on CPU tensors.

Triton fixes interpreter or compiler for every @triton.jit function (its own tl.zeros, tl.sum... too) when
the function is decorated, so this must be decided before triton.language is imported: TRITON_INTERPRET=1
if set, or when no GPU is present.
"""

import os
import sys

import torch

if "TRITON_INTERPRET" not in os.environ and not torch.cuda.is_available():
    if "triton.language" in sys.modules:
        raise ImportError(
            "kernels: no GPU here, so the kernels need Triton's interpreter, but triton was imported "
            "before kernels without TRITON_INTERPRET=1; import kernels first or set TRITON_INTERPRET=1"
        )
    os.environ["TRITON_INTERPRET"] = "1"

INTERPRET = os.environ.get("TRITON_INTERPRET", "0") == "1"
