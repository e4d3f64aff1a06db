"""Compiled CPU kernels, built on first use by torch's C++ extension loader: the k-means fit's nearest-centroid
search and seeding loop (csrc/kmeans.cpp) and the codebook lookup, forward and backward (csrc/lookup.cpp).

Each build needs a C++ compiler and ninja (a dependency); it takes ~30 s once. The built library is cached under
TORCH_EXTENSIONS_DIR (default ~/.cache/torch_extensions)/asg, named by a hash of its source, compiler flags, torch
and Python, so checkouts of different commits sharing a home directory never rebuild over each other. Each build
runs in its own temporary directory and is published by an atomic rename: a process killed mid-build (a preempted
SLURM job, a timed-out CI run) leaves no lock behind. torch's own shared build folders wait forever on such a lock.

The search dispatches on the CPU at run time (AVX-512 or AVX2), so one build serves every node of a cluster.
Where a build fails, the CPU lacks AVX2 (for `nearest`), or ASG_KERNELS=0, `nearest`, `gather` and `scatter` return
None (and `seed_steps` False) and the caller runs torch ops: the same codes, and the same gradients on one thread.
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import os
import shutil
import sys
import tempfile
import threading
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from torch.utils import cpp_extension

log = logging.getLogger(__name__)
SOURCES = {name: Path(__file__).with_name("csrc") / f"{name}.cpp" for name in ("kmeans", "lookup")}
# ATen's parallel_for is an OpenMP pragma inside the extension: without -fopenmp it compiles to one thread. The
# GOMP symbols then resolve to the libgomp that libtorch_cpu loads, so one OpenMP runtime serves both. Apple's clang
# has no -fopenmp; there the kernels run on one thread.
CFLAGS = ["-O3", *(["-fopenmp"] if sys.platform.startswith("linux") else [])]
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
        source = SOURCES[name]
        build = f"{CFLAGS} {torch.__version__} {sys.version}"
        tag = hashlib.sha256(source.read_bytes() + build.encode()).hexdigest()[:12]
        ext = f"asg_{name}_{tag}"  # also the module's name, which the library's init symbol carries
        cache = Path(os.environ.get("TORCH_EXTENSIONS_DIR") or cpp_extension.get_default_build_root()) / "asg"
        built = cache / f"{ext}.so"
        if not built.is_file():
            return _compile(ext, source, built)
        spec = importlib.util.spec_from_file_location(ext, built)
        lib = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(lib)
        return lib
    except Exception as err:  # no compiler, no ninja, a failed build: torch ops take over
        log.warning("%s kernel not built (%s); torch ops run instead (slower)", name, err)
        return None


def _compile(ext: str, source: Path, built: Path) -> Any:
    """Build and load `ext` from `source` in a private directory, then publish it at `built` in one rename."""
    if shutil.which("ninja") is None:  # pip's ninja sits beside python, which need not be on PATH
        import ninja

        os.environ["PATH"] = ninja.BIN_DIR + os.pathsep + os.environ.get("PATH", "")
    built.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=built.parent, prefix=f"{ext}.build.") as tmp:
        lib = cpp_extension.load(name=ext, sources=[str(source)], extra_cflags=CFLAGS, build_directory=tmp)
        os.replace(Path(tmp) / f"{ext}.so", built)  # same filesystem: concurrent builders publish whole files
    return lib


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


def seed_steps(
    weights: Tensor, rows: Tensor, min_d: Tensor, w: Tensor | None, chosen: Tensor, trials: int, gen: torch.Generator
) -> bool:
    """Run `asg.quantize._seed_steps_torch` (the same arguments, the same picks) compiled, without holding the GIL;
    False where no kernel serves these tensors (the caller runs the torch loop)."""
    if min_d.device.type != "cpu":
        return False
    ext = module()
    if ext is None:
        return False
    ext.seed_steps(weights, rows, min_d, w, chosen, trials, gen)
    return True


def gather(codes: Tensor, codebooks: Tensor) -> Tensor | None:
    """(n, m * s) float32 vectors of codes (n, m) from codebooks (m, k, s); None where no kernel serves these
    tensors (the caller uses torch)."""
    if codes.device.type != "cpu" or codebooks.device.type != "cpu" or codebooks.dtype != torch.float32:
        return None
    ext = module("lookup")
    return None if ext is None else ext.gather(codes.contiguous(), codebooks.contiguous())


def scatter(grad: Tensor, codes: Tensor, k: int) -> Tensor | None:
    """The (m, k, s) codebook gradient of `gather` for grad (n, m * s): rows added in order, the same sums as
    autograd's index_add, bit for bit; None where no kernel serves these tensors (the caller uses torch)."""
    if grad.device.type != "cpu" or grad.dtype != torch.float32 or codes.device.type != "cpu":
        return None
    ext = module("lookup")
    return None if ext is None else ext.scatter(grad.contiguous(), codes.contiguous(), k)
