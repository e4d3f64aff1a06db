"""How many rows k-means++ seeding needs: fit time and error against the rows per centroid it seeds on.

    python -m experiments.seeding_rows [--rows 8,16,32,64] [--settings 8:512,8:1024,32:1024]
        [--matrices MiniLM,e5-small] [--threads 1] [--out-dir experiments/results/seeding_rows]

`asg.quantize` seeds each sub-space on a row subsample (`_SEED_ROWS_PER_CENTROID`: s rows per centroid in a
sub-space of s floats, within a range, and at most `_SEED_SHARE` of the sample). Here every fit seeds on exactly R
rows per centroid instead (at least `_SEED_ROWS_MIN` rows, at most all of them), for each R of --rows, next to the
rule as it stands and faiss's ProductQuantizer; each fit in a fresh process through `experiments.pq_fit` (same
matrices, defaults and timing).
This is the measurement behind the rule: the seeding's cost grows with R while Lloyd's iterations recover from a
coarse start, more so in few dimensions than in many. Writes seeding_rows.{md,json} to --out-dir.
"""

from __future__ import annotations

import argparse
import multiprocessing
import shlex
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

from experiments import pq_fit
from experiments.runner import RESULTS

RULE = "rule"  # the seeding rows asg.quantize uses today


def _fit(job: dict[str, Any], variant: str | int, threads: int) -> dict[str, Any]:
    """One fit in this (fresh) process: faiss, the current rule, or R seeding rows per centroid."""
    if isinstance(variant, int):
        from asg import quantize

        quantize._SEED_ROWS_PER_CENTROID = (variant, variant)
        quantize._SEED_SHARE = 1.0
    return pq_fit._run_one(job, "faiss" if variant == "faiss" else "torch", threads)


def table(rows: list[dict[str, Any]], variants: list[str | int]) -> str:
    header = ["matrix", "m", "k", "s", *(f"{v} rows" if isinstance(v, int) else v for v in variants)]
    lines = ["| " + " | ".join(header) + " |", "|---" * len(header) + "|"]
    for r in rows:
        faiss_cpu = r["fits"]["faiss"]["cpu_seconds"]
        cells = [
            f"{r['fits'][str(v)]['rel_error']:.5f}, {r['fits'][str(v)]['cpu_seconds']:.1f} cpu s"
            + ("" if v == "faiss" else f" ({r['fits'][str(v)]['cpu_seconds'] / faiss_cpu:.2f}x)")
            for v in variants
        ]
        lines.append(f"| {r['matrix']} | {r['m']} | {r['k']} | {r['d'] // r['m']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    from asg.quantize import _SEED_ROWS_MIN, _SEED_ROWS_PER_CENTROID, _SEED_SHARE
    from asg.results import write_json_atomic, write_text_atomic

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", default="8,16,32,64", help="seeding rows per centroid to try")
    parser.add_argument("--settings", default="8:512,8:1024,32:1024", help="m:k pairs")
    parser.add_argument("--matrices", default="MiniLM,e5-small", help="of experiments.pq_fit's real matrices")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--e5-dir", type=Path, default=None)
    parser.add_argument("--out-dir", type=Path, default=RESULTS / "seeding_rows")
    args = parser.parse_args(argv)
    try:
        settings = [tuple(int(v) for v in pair.split(":")) for pair in args.settings.split(",")]
        counts = [int(v) for v in args.rows.split(",")]
    except ValueError:
        parser.error("--settings takes m:k pairs (32:1024,8:512), --rows integers (16,32)")
    variants: list[str | int] = ["faiss", RULE, *counts]
    command = shlex.join(["python", "-m", "experiments.seeding_rows", *(argv if argv is not None else sys.argv[1:])])
    matrices = args.matrices.split(",")
    jobs = pq_fit.jobs(False, args.e5_dir or pq_fit._default_e5_dir(), set(settings))
    jobs = sorted((j for j in jobs if j["matrix"] in matrices), key=lambda j: matrices.index(j["matrix"]))
    rows, missing = [], []
    spawn = multiprocessing.get_context("spawn")
    for job in jobs:
        if "missing" in job:
            missing.append(f"{job['matrix']} m={job['m']} k={job['k']}: {job['missing']}")
            continue
        fits = {}
        for variant in variants:
            with ProcessPoolExecutor(max_workers=1, mp_context=spawn) as pool:
                fits[str(variant)] = pool.submit(_fit, job, variant, args.threads).result()
        first = fits["faiss"]
        rows.append({key: job[key] for key in ("matrix", "m", "k")} | {"V": first["V"], "d": first["d"], "fits": fits})
        print(table(rows[-1:], variants).splitlines()[-1], flush=True)

    versions = pq_fit._versions()
    text = "\n".join(
        [
            "# k-means++ seeding rows per centroid: fit error and time",
            "",
            f"Command: `{command}`",
            "",
            f"Each cell: relative error ||E - Ê||_F / ||E||_F, then cpu seconds of the whole `product_quantize` call "
            f"({args.threads} thread(s), a fresh process per fit, faiss's ProductQuantizer first) and the ratio to "
            f"faiss's cpu seconds. `{RULE}`: the seeding rows as `asg.quantize` chooses them (s rows per centroid "
            f"within {list(_SEED_ROWS_PER_CENTROID)}, at most {_SEED_SHARE:g} of the sample, at least "
            f"{_SEED_ROWS_MIN:,}); a number R: R rows per centroid (at least {_SEED_ROWS_MIN:,}, at most the whole "
            f"sample). Machine: {versions['cpu']}; {versions['asg nearest-centroid search']}. Load averages before "
            "each fit are in seeding_rows.json.",
            "",
            table(rows, variants),
            *([""] + [f"- missing: {m}" for m in missing] if missing else []),
            "",
        ]
    )
    write_json_atomic(args.out_dir / "seeding_rows.json", {"command": command, "versions": versions, "rows": rows})
    write_text_atomic(args.out_dir / "seeding_rows.md", text)
    print(text)
    return rows


if __name__ == "__main__":
    main()
