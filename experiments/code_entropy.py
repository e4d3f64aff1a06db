"""How much an entropy coder could take off the code table: the code histograms of real fits.

    python -m experiments.code_entropy [--e5-dir DIR] [--out-dir experiments/results/code_entropy]

The export stores each code in ceil(log2 k) bits. An entropy coder needs at least the empirical entropy of each
sub-space's codes over the vocabulary rows (the table holds one entry per row, so row counts, not token
frequencies in text, are what it compresses), and a mixed-radix packing log2 k bits. For the settings the byte
studies run, on the word embeddings of all-MiniLM-L6-v2 and (when converted) multilingual-e5-small, fitted with
the configs' k-means (`product_quantize`, 25 iterations on every row, seed 0; fits cached under .cache/codebooks),
this writes code_entropy.{md,json}: the bits per code each way and the share of the method's exported bytes
(float16 codebooks, as the 1% studies store them) that each would save.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path
from typing import Any

import torch

from asg.quantize import packed_code_bytes, product_quantize
from asg.results import write_json_atomic, write_text_atomic
from experiments.pq_fit import HINTS, _default_e5_dir, _load, _real_file
from experiments.runner import RESULTS, command_line

# (matrix, m, k, what the setting is)
SETTINGS = [
    ("e5", 32, 1024, "ASG default (0.41% of the parameters)"),
    ("e5", 12, 512, "pq at 1% of the bytes"),
    ("minilm", 32, 128, "ASG default"),
    ("minilm", 16, 65, "pq at 1% of the bytes"),
    ("minilm", 8, 128, "BC5CDR m=8 (0.94% of the bytes)"),
    ("minilm", 1, 1499, "whole-row k-means, as Semantic Grouping fits"),
]
NAMES = {"e5": "multilingual-e5-small", "minilm": "all-MiniLM-L6-v2"}


def entropy_bits(codes: torch.Tensor, k: int) -> float:
    """Mean over sub-spaces of the empirical entropy (bits) of the codes (V, m) in each."""
    total = 0.0
    for column in codes.long().t():
        p = torch.bincount(column, minlength=k).double() / len(column)
        p = p[p > 0]
        total -= (p * p.log2()).sum().item()
    return total / codes.shape[1]


def measure(weight: torch.Tensor, m: int, k: int, cache_dir: str | None = ".cache/codebooks") -> dict[str, Any]:
    """Fit (V, d) at m x k and compare the code table's bits per code: packed, mixed-radix, entropy."""
    fit = product_quantize(weight, m=m, k=k, seed=0, sample_rows=None, cache_dir=cache_dir)
    vocab, dim = weight.shape
    packed, radix, entropy = math.ceil(math.log2(k)), math.log2(k), entropy_bits(fit.codes, k)
    exported = packed_code_bytes(vocab * m, k) + m * k * (dim // m) * 2  # float16 codebooks

    def saving(bits: float) -> float:  # share of the export saved by storing each code in `bits`
        return 100 * (packed - bits) * vocab * m / 8 / exported

    return {
        "V": vocab,
        "m": m,
        "k": k,
        "packed_bits": packed,
        "log2_k": radix,
        "entropy_bits": entropy,
        "exported_bytes": exported,
        "radix_saving_pct": saving(radix),
        "entropy_saving_pct": saving(entropy),
    }


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--e5-dir", type=Path, default=_default_e5_dir())
    parser.add_argument("--out-dir", type=Path, default=RESULTS / "code_entropy")
    args = parser.parse_args(argv)
    rows, missing = [], []
    for source, m, k, what in SETTINGS:
        path = _real_file(source, args.e5_dir)
        if path is None or not path.is_file():
            missing.append(f"- {NAMES[source]} m={m} k={k}: no matrix; {HINTS[source]}")
            continue
        weight = _load({"source": source, "path": path})
        rows.append({"matrix": NAMES[source], "setting": what} | measure(weight, m, k))
        print(rows[-1], flush=True)
    table = [
        "| matrix | setting | m | k | bits per code: packed / log2 k / entropy | export saved by a mixed-radix "
        "packing | by an ideal entropy coder |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        table.append(
            f"| {r['matrix']} | {r['setting']} | {r['m']} | {r['k']} | {r['packed_bits']} / {r['log2_k']:.2f} / "
            f"{r['entropy_bits']:.2f} | {r['radix_saving_pct']:.1f}% | {r['entropy_saving_pct']:.1f}% |"
        )
    text = "\n".join(
        [
            "# Code-table entropy of real fits",
            "",
            f"Command: `{command_line('experiments.code_entropy')}`",
            "",
            "Bits per code as exported (ceil(log2 k)), with a mixed-radix packing (log2 k) and at the codes' "
            "empirical entropy over the vocabulary rows (mean over sub-spaces); the savings are shares of the "
            "method's exported bytes (code table packed, float16 codebooks). Fits: `product_quantize`, seed 0, "
            "25 iterations on every row.",
            "",
            *table,
            *(["", "Not measured:", *missing] if missing else []),
            "",
        ]
    )
    write_text_atomic(args.out_dir / "code_entropy.md", text)
    write_json_atomic(
        args.out_dir / "code_entropy.json", {"command": command_line("experiments.code_entropy"), "rows": rows}
    )
    print(text)
    return rows


if __name__ == "__main__":
    main()
