"""Tier layouts of `asg=tiered` at one byte budget, compared by the error on the tokens the training text uses.

    python -m experiments.tier_search --data-dir ../shared/data --e5-dir .cache/e5-small [--budget 1]

Every layout in `LAYOUTS` is sized to `--budget` % of e5-small's float32 embedding bytes (float16 codebooks, the
code tables bit-packed, as `asg.budget_bytes_pct` does), fitted once (seed 1, the k-means defaults, the fit cache),
and scored without training by two reconstruction errors: over the whole matrix, and over the token occurrences of
the first --train-samples English WikiANN training sentences (the text a zero-shot run trains on: no dev or test
data, and no target language, chooses anything). The layout with the lowest usage-weighted error is the choice
(`choice` in results.json); `experiments.bytes_frontier` trains it at the same budget for the task scores. Writes
experiments/results/tier_search_e5/ README.md and results.json whole.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from torch import Tensor
from transformers import PreTrainedTokenizerBase

from asg.data import conll
from asg.methods import get_method
from asg.results import write_json_atomic, write_text_atomic
from experiments import rate_distortion
from experiments.runner import RESULTS

OUT = RESULTS / "tier_search_e5"
SEED = 1
# (where each tier but the last ends as a fraction of V, sub-spaces per tier); the first is conf/asg/tiered.yaml's
LAYOUTS: list[tuple[list[float], list[int]]] = [
    ([0.08, 0.4], [32, 16, 4]),
    ([0.08, 0.4], [32, 12, 2]),
    ([0.008, 0.08, 0.4], [96, 32, 16, 4]),
    ([0.008, 0.08, 0.4], [64, 32, 12, 2]),
    ([0.008, 0.08, 0.4], [96, 24, 8, 2]),
    ([0.008, 0.1], [96, 24, 3]),
    ([0.02, 0.2], [64, 16, 3]),
    ([0.004, 0.1], [192, 24, 3]),
    ([0.008, 0.1], [128, 24, 3]),
    ([0.016, 0.1], [96, 24, 3]),
    ([0.008, 0.1], [96, 32, 2]),
]


def usage_counts(ids: Tensor, vocab: int) -> Tensor:
    """Occurrences of every id (vocab,) in a flat tensor of token ids."""
    return torch.bincount(ids, minlength=vocab).double()


def english_train_ids(data_dir: str, tokenizer: PreTrainedTokenizerBase, samples: int, max_length: int) -> Tensor:
    """Token ids of the first `samples` English WikiANN training sentences, tokenized as the NER pipeline does
    (special tokens included, truncated at `max_length`)."""
    sentences = conll.load_local(conll.task_dir(data_dir, "wikiann", None), "wikiann", "train", "en")[:samples]
    ids = [
        tokenizer(s["tokens"], is_split_into_words=True, truncation=True, max_length=max_length)["input_ids"]
        for s in sentences
    ]
    return torch.tensor([i for row in ids for i in row])


def search(
    weight: Tensor, counts: Tensor, budget: float, unigram: Tensor | None = None, powers: tuple[float, ...] = ()
) -> list[dict]:
    """Every layout's size at the budget and its fit errors (with `unigram` weights, a third), in `LAYOUTS` order;
    each layout fitted plainly, then once more per power p with k-means rows weighted by unigram ** p."""
    if powers and unigram is None:
        raise ValueError("--row-weight-powers needs a unigram tokenizer (tokenizer.json with a Unigram model)")
    vocab, hidden = weight.shape
    rows = []
    for fractions, m in LAYOUTS:
        cfg = {"method": "tiered", "tier_fractions": fractions, "tier_m": m, "k": None, "budget_pct": None}
        cfg |= {"budget_bytes_pct": budget, "storage_dtype": "float16", "seed": SEED, "cache_dir": ".cache/codebooks"}
        settings = get_method("tiered").resolve(cfg, vocab, hidden)
        for power in (None, *powers):
            weighted = {} if power is None else {"row_weights": "unigram", "row_weight_power": power}
            module = rate_distortion.fit(weight, cfg | weighted, unigram)
            approx = module.dense_weight().detach().float()
            row = {"tier_fractions": fractions, "tier_m": m, "tier_rows": settings["tier_rows"], "k": settings["k"]}
            row |= {"row_weight_power": power, "bytes_kept_pct": module.stats()["bytes_kept_pct_packed"]}
            row["rel_error"] = rate_distortion.weighted_error(weight, approx, torch.ones(vocab, dtype=torch.float64))
            row["usage_error"] = rate_distortion.weighted_error(weight, approx, counts)
            if unigram is not None:
                row["unigram_error"] = rate_distortion.weighted_error(weight, approx, unigram)
            rows.append(row)
    return rows


def choice(rows: list[dict]) -> dict:
    """The plainly fitted layout with the lowest usage error (what `experiments.bytes_frontier` trains)."""
    return min((r for r in rows if r.get("row_weight_power") is None), key=lambda r: r["usage_error"])


def _tiers(row: dict) -> str:
    return ", ".join(f"{n:,} m={m}" for n, m in zip(row["tier_rows"], row["tier_m"], strict=True))


def _fit(row: dict) -> str:
    power = row.get("row_weight_power")
    return "none" if power is None else f"unigram^{power:g}"


def report(
    rows: list[dict], command: str, args: argparse.Namespace, tokens: int, unigram_bound: float | None = None
) -> str:
    best = choice(rows)
    lines = [
        f"# Tier layouts of `asg=tiered` at {args.budget:g}% of the bytes: multilingual-e5-small (Q4-dequantized)",
        "",
        f"Command: `{command}`",
        "",
        f"Each layout sized to {args.budget:g}% of the float32 embedding's bytes (float16 codebooks, code tables",
        f"bit-packed), fitted once (seed {SEED}, k-means defaults). usage error: the relative error over the",
        f"{tokens:,} token occurrences of the first {args.train_samples:,} English WikiANN training sentences",
        f"(tokenized as the pipeline does, at most {args.max_length} tokens); rel. error: over the whole matrix. No",
        "training: the task score of the choice comes from `experiments.bytes_frontier`. unigram error: weighted by",
        "each row's probability under the tokenizer's unigram model (no task text; it chooses nothing). k-means",
        "weights: none, or each row weighted by its unigram probability to a power (`asg.row_weights=unigram`,",
        "`asg.row_weight_power`); the choice is among the plain fits, the layout `experiments.bytes_frontier` trains.",
        "",
        "| tiers (ids, m) | k | k-means weights | bytes kept % | rel. error | usage error | unigram error |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        tiers = _tiers(r)
        mark = "**" if r is best else ""
        lines.append(
            f"| {mark}{tiers}{mark} | {r['k']} | {_fit(r)} | {r['bytes_kept_pct']:.3f} | {r['rel_error']:.4f} | "
            f"{mark}{r['usage_error']:.4f}{mark} | "
            + (f"{r['unigram_error']:.4f} |" if "unigram_error" in r else "— |")
        )
    lines += ["", f"Lowest usage error: `asg.tier_fractions={best['tier_fractions']} asg.tier_m={best['tier_m']}`."]
    if unigram_bound is not None and all("unigram_error" in r for r in rows):
        low = min(rows, key=lambda r: r["unigram_error"])
        lines += [
            "",
            f"The Gaussian rate-distortion bound on the unigram-weighted error at {args.budget:g}% of the bytes "
            f"(`experiments.rate_distortion`) is {unigram_bound:.4f}; the lowest layout's unigram error is "
            f"{low['unigram_error']:.4f} ({_tiers(low)}; k-means weights {_fit(low)}).",
        ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", default="../shared/data")
    parser.add_argument("--e5-dir", default=".cache/e5-small")
    parser.add_argument("--budget", type=float, default=1.0, help="%% of the float32 embedding's bytes")
    parser.add_argument("--train-samples", type=int, default=2000)
    parser.add_argument("--max-length", type=int, default=64)
    parser.add_argument(
        "--row-weight-powers", type=float, nargs="*", default=[], help="also fit each layout unigram-weighted"
    )
    args = parser.parse_args(argv)
    from transformers import AutoModel, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(args.e5_dir)
    weight = AutoModel.from_pretrained(args.e5_dir).get_input_embeddings().weight.detach().float()
    ids = english_train_ids(args.data_dir, tokenizer, args.train_samples, args.max_length)
    unigram = rate_distortion.unigram_weights(Path(args.e5_dir) / "tokenizer.json", weight.shape[0])
    bound = None
    if unigram is not None:
        bits = rate_distortion.budget_bits(args.budget, weight.shape[1])
        bound = rate_distortion.bound_error(rate_distortion.spectrum(weight), bits, unigram)
    rows = search(weight, usage_counts(ids, weight.shape[0]), args.budget, unigram, tuple(args.row_weight_powers))
    command = f"python -m experiments.tier_search --data-dir {args.data_dir} --e5-dir {args.e5_dir} "
    command += f"--budget {args.budget:g} --train-samples {args.train_samples} --max-length {args.max_length}"
    if args.row_weight_powers:
        command += " --row-weight-powers " + " ".join(f"{p:g}" for p in args.row_weight_powers)
    text = report(rows, command, args, len(ids), bound)
    best = choice(rows)
    found = {"command": command, "budget": args.budget, "tokens": len(ids), "layouts": rows, "choice": best}
    found["unigram_bound"] = bound
    write_json_atomic(OUT / "results.json", found)
    write_text_atomic(OUT / "README.md", text)
    print(text)


if __name__ == "__main__":
    main()
