"""Fit quality at equal bits: asg's PQ and OPQ against faiss's ProductQuantizer and OPQMatrix + ProductQuantizer.

    python -m experiments.opq_fit [--threads 1] [--e5-dir DIR] [--quick] [--out-dir experiments/results]

On all-MiniLM-L6-v2's word embedding (30,522 x 384) and, when its converted checkpoint is there, on
multilingual-e5-small's (250,037 x 384), at m in {8, 32} and k=256 (faiss wants a power of two): the relative
error ||E - Ê||_F / ||E||_F and the seconds of each fit. asg's OPQ uses conf/asg/opq.yaml's defaults (8 rounds of
4 Lloyd iterations on 65,536 rows, then the full PQ fit); faiss's OPQMatrix its own (50 rounds of 4 iterations).
Equal bits: both OPQs store the same codes and codebooks plus one d x d rotation. Writes opq_fit.{md,json}.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import torch

from experiments.pq_fit import HINTS, _default_e5_dir, _load, _real_file
from experiments.runner import RESULTS, command_line

GRID = [(8, 256), (32, 256)]


def _faiss(e: torch.Tensor, m: int, k: int, rotate: bool) -> tuple[float, float]:
    import faiss

    start = time.perf_counter()
    x = e.numpy()
    nbits = k.bit_length() - 1
    pq = faiss.ProductQuantizer(e.shape[1], m, nbits)
    if rotate:
        opq = faiss.OPQMatrix(e.shape[1], m)
        index = faiss.IndexPreTransform(opq, faiss.IndexPQ(e.shape[1], m, nbits))
        index.train(x)
        index.add(x)
        approx = index.reconstruct_n(0, len(x))
    else:
        pq.train(x)
        approx = pq.decode(pq.compute_codes(x))
    seconds = time.perf_counter() - start
    return float(((e - torch.from_numpy(approx)).norm() / e.norm()).item()), seconds


def _asg(e: torch.Tensor, m: int, k: int, rotate: bool) -> tuple[float, float]:
    from asg.embedding import ASGEmbedding
    from asg.opq import OPQEmbedding

    start = time.perf_counter()
    module = (OPQEmbedding if rotate else ASGEmbedding).from_embedding(e, m=m, k=k, seed=0)
    return module.rel_error, time.perf_counter() - start


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    from asg.results import write_json_atomic, write_text_atomic

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--e5-dir", default=None)
    parser.add_argument("--quick", action="store_true", help="a Gaussian 3,000 x 32 matrix, m=4, k=16")
    parser.add_argument("--out-dir", default=str(RESULTS))
    args = parser.parse_args(argv)
    import faiss

    torch.set_num_threads(args.threads)
    faiss.omp_set_num_threads(args.threads)
    if args.quick:
        matrices = {"Gaussian 3,000 x 32": ({"source": "gaussian", "V": 3000, "d": 32}, [(4, 16)])}
    else:
        matrices = {}
        for name, source in (("MiniLM (30,522 x 384)", "minilm"), ("e5-small (250,037 x 384)", "e5")):
            path = _real_file(source, Path(args.e5_dir) if args.e5_dir else _default_e5_dir())
            matrices[name] = ({"source": source, "path": str(path)}, GRID) if path and path.is_file() else HINTS[source]
    rows: list[dict[str, Any]] = []
    for name, spec in matrices.items():
        if isinstance(spec, str):
            rows.append({"matrix": name, "missing": spec})
            continue
        job, grid = spec
        e = _load(job)
        for m, k in grid:
            row: dict[str, Any] = {"matrix": name, "V": e.shape[0], "d": e.shape[1], "m": m, "k": k}
            for label, fn in (("asg_pq", _asg), ("faiss_pq", _faiss), ("asg_opq", _asg), ("faiss_opq", _faiss)):
                row[label], row[f"{label}_seconds"] = fn(e, m, k, label.endswith("opq"))
            rows.append(row)
            print(row, flush=True)
    lines = [
        "| matrix | m | k | asg PQ | faiss PQ | asg OPQ | faiss OPQ | seconds asg OPQ / faiss OPQ |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        if "missing" in r:
            lines.append(f"| {r['matrix']} | | | missing: {r['missing']} | | | | |")
            continue
        lines.append(
            f"| {r['matrix']} | {r['m']} | {r['k']} | {r['asg_pq']:.4f} | {r['faiss_pq']:.4f} "
            f"| **{r['asg_opq']:.4f}** | {r['faiss_opq']:.4f} "
            f"| {r['asg_opq_seconds']:.0f} / {r['faiss_opq_seconds']:.0f} |"
        )
    command = command_line("experiments.opq_fit")
    text = (
        "# Fit quality at equal bits: PQ and OPQ, asg against faiss\n\n"
        f"Command: `{command}`\n\nRelative error ||E - Ê||_F / ||E||_F (lower is better); {args.threads} thread(s); "
        "seconds are whole fits on a machine that may be shared. Word embeddings of all-MiniLM-L6-v2 and "
        "multilingual-e5-small (Q4-dequantized)"
        + (" (here a Gaussian smoke test)" if args.quick else "")
        + ".\n\n"
        + "\n".join(lines)
        + "\n"
    )
    write_json_atomic(f"{args.out_dir}/opq_fit.json", {"command": command, "rows": rows})
    write_text_atomic(f"{args.out_dir}/opq_fit.md", text)
    print(text)
    return rows


if __name__ == "__main__":
    main()
