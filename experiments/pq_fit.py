"""PQ fit time and error: asg's torch k-means against faiss's ProductQuantizer, side by side.

    python -m experiments.pq_fit [--quick] [--threads 2] [--out-dir experiments/results]

At each setting both backends quantize the same synthetic matrix, i.i.d. standard Gaussian (seed 0; no model
weights), through `product_quantize` with its defaults (25 iterations at most, seed 0, sample_rows="auto" = at
most 256 rows per centroid). backend="faiss" is faiss's default training: random-row seeding, all 25
iterations, the same 256-rows-per-centroid sample. backend="torch" is what asg runs: greedy k-means++ seeding,
early stop once a sub-space's inertia falls by less than tol=1e-5 in an iteration.

seconds is the whole `product_quantize` call (fit, encoding every row, the error); rel_error is
||E - Ê||_F / ||E||_F with Ê rebuilt from each backend's codes and codebooks the same way. Each run is its own
process (spawned), so thread pools and memory do not carry over; peak RSS delta is the process's peak resident
memory minus its resident memory once the matrix is built. Both libraries get the same thread count. The machine
may be shared: the load average before each run is recorded, and cpu seconds (all threads) sit beside wall time.

Writes pq_fit.md and pq_fit.json to --out-dir (default experiments/results).
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import platform
import resource
import shlex
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

from experiments.runner import RESULTS

SETTINGS = [  # name, V, d, m, k
    ("XLM-R/mT5", 250_002, 768, 8, 1024),
    ("mBERT", 119_547, 768, 8, 512),
]
QUICK_SETTINGS = [("quick-a", 4000, 64, 8, 64), ("quick-b", 3000, 48, 4, 32)]
FITS = (
    "product_quantize defaults, at most 25 iterations on min(V, 256 k) rows; faiss: its ProductQuantizer, "
    "random-row seeding, every iteration; torch: greedy k-means++ seeding, stops a sub-space early below a "
    "1e-5 relative inertia change. seconds: the whole call (fit, encoding every row, the error)."
)
BACKENDS = ("faiss", "torch")  # faiss first: a slow start of the machine does not favour the reference


def _run_one(vocab: int, dim: int, m: int, k: int, backend: str, threads: int) -> dict[str, Any]:
    """One fit in a fresh process: wall and cpu seconds, relative error, peak RSS above the built matrix."""
    import faiss
    import psutil
    import torch

    from asg.quantize import product_quantize

    torch.set_num_threads(threads)
    faiss.omp_set_num_threads(threads)
    weight = torch.randn(vocab, dim, generator=torch.Generator().manual_seed(0))
    _reset_peak_rss()
    rss_before = psutil.Process().memory_info().rss
    load = os.getloadavg()[0]
    wall, cpu = time.perf_counter(), time.process_time()
    result = product_quantize(weight, m=m, k=k, backend=backend)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    peak = _peak_rss()
    return {
        "seconds": wall,
        "cpu_seconds": cpu,
        "rel_error": result.rel_error,
        "peak_rss_delta_mib": max(0, peak - rss_before) / 2**20,
        "load_avg_before": load,
    }


def _reset_peak_rss() -> None:
    """Start the peak-RSS count afresh (Linux: VmHWM drops to the current RSS), so imports do not count."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass  # elsewhere the process's lifetime peak stands in


def _peak_rss() -> int:
    """Peak resident bytes since `_reset_peak_rss`."""
    status = Path("/proc/self/status")
    for line in status.read_text().splitlines() if status.is_file() else []:
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * (1 if sys.platform == "darwin" else 1024)


def _versions() -> dict[str, str]:
    import faiss
    import numpy
    import torch

    return {
        "torch": torch.__version__,
        "faiss": faiss.__version__,
        "faiss_build": faiss.get_compile_options().strip(),
        "numpy": numpy.__version__,
        "python": platform.python_version(),
        "cpu": _cpu_model(),
    }


def _cpu_model() -> str:
    cpuinfo = Path("/proc/cpuinfo")
    lines = cpuinfo.read_text().splitlines() if cpuinfo.is_file() else []
    names = [line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")]
    return names[0] if names else platform.processor()


def table(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| setting | V | d | m | k | backend | seconds | cpu s | rel. error | time torch/faiss | peak RSS delta MiB "
        "| load avg |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        ratio = f"{r['ratio_torch_faiss']:.2f}" if "ratio_torch_faiss" in r else ""
        lines.append(
            f"| {r['setting']} | {r['V']:,} | {r['d']} | {r['m']} | {r['k']} | {r['backend']} | {r['seconds']:.1f} | "
            f"{r['cpu_seconds']:.1f} | {r['rel_error']:.5f} | {ratio} | {r['peak_rss_delta_mib']:.0f} | "
            f"{r['load_avg_before']:.1f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    """Run every setting with both backends; print the table and write pq_fit.{md,json}."""
    from asg.results import write_json_atomic, write_text_atomic

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small matrices: a smoke test of the script")
    parser.add_argument("--threads", type=int, default=2, help="torch and faiss (OpenMP) threads")
    parser.add_argument("--out-dir", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    command = "python -m experiments.pq_fit " + shlex.join(argv if argv is not None else sys.argv[1:])

    rows = []
    spawn = multiprocessing.get_context("spawn")
    for name, vocab, dim, m, k in QUICK_SETTINGS if args.quick else SETTINGS:
        times = {}
        for backend in BACKENDS:
            # a fresh process per run: its own peak RSS and thread pools
            with ProcessPoolExecutor(max_workers=1, mp_context=spawn) as pool:
                stats = pool.submit(_run_one, vocab, dim, m, k, backend, args.threads).result()
            row = {"setting": name, "V": vocab, "d": dim, "m": m, "k": k, "backend": backend, **stats}
            times[backend] = stats["seconds"]
            if backend == "torch":
                row["ratio_torch_faiss"] = stats["seconds"] / times["faiss"]
            rows.append(row)
            print(table(rows[-1:]).splitlines()[-1], flush=True)

    meta = {
        "command": command,
        "data": "synthetic: i.i.d. standard Gaussian matrix (torch.randn, seed 0), not model weights",
        "fits": FITS,
        "threads": args.threads,
        "cpu_count": os.cpu_count(),
        "versions": _versions(),
    }
    args.out_dir.mkdir(parents=True, exist_ok=True)
    write_json_atomic(args.out_dir / "pq_fit.json", {**meta, "rows": rows})
    text = (
        "# PQ fit: asg (torch) against faiss ProductQuantizer\n\n"
        f"Command: `{command}`\n\n"
        f"Data: {meta['data']}. Threads: {args.threads} for both (machine CPUs: {meta['cpu_count']}).\n"
        f"Fits: {FITS}\n"
        f"Versions: {', '.join(f'{key} {value}' for key, value in meta['versions'].items())}.\n\n"
        f"{table(rows)}\n"
    )
    write_text_atomic(args.out_dir / "pq_fit.md", text)
    print(text)
    return rows


if __name__ == "__main__":
    main()
