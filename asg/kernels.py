"""Compiled CPU kernels for the k-means fit, built on first use by torch's C++ extension loader.

The build needs a C++ compiler and ninja (a dependency); it takes ~30 s once and is cached by torch
(TORCH_EXTENSIONS_DIR, default ~/.cache/torch_extensions). It dispatches on the CPU at run time (AVX-512 or
AVX2), so one build serves every node of a cluster. Where the build fails, the CPU lacks AVX2, or
ASG_KERNELS=0, `nearest` returns None and the caller runs torch ops, which give the same codes.
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
SOURCE = Path(__file__).with_name("csrc") / "kmeans.cpp"
_lock = threading.Lock()
_loaded: list[Any] = []  # [module or None] once a build was tried


def module() -> Any | None:
    """The built extension, or None where it cannot be built (the reason is logged once)."""
    with _lock:  # the fit's threads ask at once; one builds
        if not _loaded:
            _loaded.append(_build())
        return _loaded[0]


def _build() -> Any | None:
    if os.environ.get("ASG_KERNELS", "1") == "0":
        return None
    try:
        from torch.utils.cpp_extension import load

        if shutil.which("ninja") is None:  # pip's ninja sits beside python, which need not be on PATH
            import ninja

            os.environ["PATH"] = ninja.BIN_DIR + os.pathsep + os.environ.get("PATH", "")

        return load(name="asg_kmeans", sources=[str(SOURCE)], extra_cflags=["-O3"], verbose=False)
    except Exception as err:  # no compiler, no ninja, a failed build: the torch path gives the same codes
        log.warning("k-means kernel not built (%s); the fit uses torch ops (same codes, slower)", err)
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
