"""Compiled CPU kernels, built on first use by torch's C++ extension loader: the k-means fit's nearest-centroid
search (csrc/kmeans.cpp) and the codebook lookup's backward (csrc/lookup.cpp).

Each build needs a C++ compiler and ninja (a dependency); it takes ~30 s once and is cached by torch
(TORCH_EXTENSIONS_DIR, default ~/.cache/torch_extensions). The search dispatches on the CPU at run time (AVX-512
or AVX2), so one build serves every node of a cluster. Where a build fails, the CPU lacks AVX2, or
ASG_KERNELS=0, `nearest` and `scatter_rows` return None and the caller runs torch ops: the same codes, and the
same gradients on one thread.
"""

from __future__ import annotations

import logging
import os
import shutil
import threading
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

log = logging.getLogger(__name__)
SOURCES = {name: Path(__file__).with_name("csrc") / f"{name}.cpp" for name in ("kmeans", "lookup")}
_lock = threading.Lock()
_loaded: dict[str, Any] = {}  # name -> module, or None once a build failed


def module(name: str = "kmeans") -> Any | None:
    """The built extension of csrc/<name>.cpp, or None where it cannot be built (the reason is logged once)."""
    with _lock:  # the fit's threads ask at once; one builds
        if name not in _loaded:
            _loaded[name] = _build(name)
        return _loaded[name]


def _build(name: str) -> Any | None:
    if os.environ.get("ASG_KERNELS", "1") == "0":
        return None
    try:
        from torch.utils.cpp_extension import load

        if shutil.which("ninja") is None:  # pip's ninja sits beside python, which need not be on PATH
            import ninja

            os.environ["PATH"] = ninja.BIN_DIR + os.pathsep + os.environ.get("PATH", "")

        return load(name=f"asg_{name}", sources=[str(SOURCES[name])], extra_cflags=["-O3"], verbose=False)
    except Exception as err:  # no compiler, no ninja, a failed build: torch ops take over
        log.warning("%s kernel not built (%s); torch ops run instead (slower)", name, err)
        return None


def describe() -> str:
    """What serves the fit's nearest-centroid search here: the kernel's instruction set, or why torch ops do."""
    if os.environ.get("ASG_KERNELS", "1") == "0":
        return "torch ops (ASG_KERNELS=0)"
    ext = module()
    if ext is None:
        return "torch ops (kernel not built)"
    return f"kernel ({ext.isa()})" if ext.isa() != "none" else "torch ops (the CPU lacks AVX2)"


def nearest(x: Tensor, centroids: Tensor) -> tuple[Tensor, Tensor, Tensor] | None:
    """Per row of x (n, s): nearest centroid (lowest index on equal scores), its score ||c||^2 - 2 x.c and the
    runner-up score, all in float32; None where no kernel serves these tensors (the caller uses torch ops)."""
    if x.device.type != "cpu" or x.dtype != torch.float32 or centroids.dtype != torch.float32 or x.stride(-1) != 1:
        return None
    ext = module()
    if ext is None or not ext.supports(x.shape[1]):
        return None
    return tuple(ext.nearest(x, centroids))


def scatter_rows(grad: Tensor, index: Tensor, rows: int) -> Tensor | None:
    """A zeroed (rows, s) float32 table with grad's rows (n, s) added at index (n,), in order: the same sums as
    autograd's index_add, bit for bit; None where no kernel serves these tensors (the caller uses torch)."""
    if grad.device.type != "cpu" or grad.dtype != torch.float32 or index.dtype != torch.int64:
        return None
    ext = module("lookup")
    return None if ext is None else ext.scatter_rows(grad.contiguous(), index.contiguous(), rows)
