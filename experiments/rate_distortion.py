"""How low a fit error a byte budget allows: the Gaussian rate-distortion bound against the dev-selected fits.

    python -m experiments.rate_distortion [--e5-dir DIR] [--out-dir experiments/results/rate_distortion] [--refit]

For a word embedding E (V x d) with row covariance eigenvalues l_1..l_d, reverse water-filling gives the lowest
mean squared error per row that any code of R bits per row reaches on a Gaussian source with that covariance:
D(R) = sum_i min(theta, l_i), with theta set so that R = sum_i max(0, log2(l_i / theta) / 2) (Cover & Thomas,
Elements of Information Theory, 10.3.3). As a fit error, like `rel_error`, that is sqrt(V D(R)) / ||E||_F.
A byte budget gives a row R = budget x d x 32 bits, as if every stored byte went to that row's codes (no
codebooks, the mean for free), so the bound is an optimistic one for every method here.

Against it, every test cell of the committed dev-selection studies (`experiments.dev_selection`: each method at its
dev-chosen settings, at 0.4% of the parameters and at each byte budget): its bytes as exported, its seeds' mean fit
error, the bound at those bytes, and its test score as a share of the dense mean. The bound holds for a Gaussian
source, not for E; how far the fits sit above it, at every budget, is what says whether better codes could close
the gap. It weighs every vocabulary row alike: a method that spends its bits on the rows text uses (tiered ASG)
can score above what its error over all rows suggests. Where the tokenizer is a unigram one (e5's sentencepiece),
the bound is also given for the error weighted by each row's unigram probability: the room such a method has.
With --refit, each pq, rq, tiered and lowrank cell's first seed is fitted again (the fit cache, the current k-means
version) to measure its unigram-weighted error against that weighted bound.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
from pathlib import Path
from typing import Any

import torch

from asg.embedding import CompressedEmbedding
from asg.methods import get_method, storage_dtype
from asg.results import write_json_atomic, write_text_atomic
from asg.row_weights import row_weights_from, unigram_probabilities
from experiments.dev_selection import SETTINGS, tested_cells
from experiments.pq_fit import HINTS, _default_e5_dir, _load, _real_file
from experiments.runner import RESULTS, command_line

# matrix source -> (name, the dev-selection setting that fine-tunes it)
MATRICES = {"e5": ("multilingual-e5-small", "wikiann_e5"), "minilm": ("all-MiniLM-L6-v2", "bc5cdr_minilm")}
BUDGETS = (0.5, 1, 2, 5)  # % of the float32 V x d bytes
KEPT = 95  # the share of the dense score whose fit errors the report traces back to bytes
# the methods --refit fits again; sg's k-means over whole rows at k up to 12k would take longer than all of these
REFIT = ("pq", "rq", "tiered", "lowrank")


def spectrum(weight: torch.Tensor) -> dict[str, Any]:
    """The row covariance's eigenvalues (float64, ascending) and each row's squared norm of a (V, d) matrix."""
    e = weight.double()
    centred = e - e.mean(0)
    eigenvalues = torch.linalg.eigvalsh(centred.T @ centred / e.shape[0]).clamp(min=0)
    return {"eigenvalues": eigenvalues, "row_sq": e.square().sum(1)}


def bound_error(spec: dict[str, Any], bits: float, weights: torch.Tensor | None = None) -> float:
    """The reverse water-filling bound at `bits` per row on average, as a relative Frobenius error; with `weights`
    (V,), of the error weighted per row, sqrt(sum_i w_i ||e_i - a_i||^2 / sum_i w_i ||e_i||^2), the bits then
    shared out among the rows as the weights make worth it (a variable-length code table, as tiered ASG has).

    Weighting row i by w_i scales its components' variances to w_i l_j, so the bound water-fills over all V x d
    of those: rows sorted by log w and prefix sums make each rate and distortion d searches, not V x d terms."""
    w = torch.ones_like(spec["row_sq"]) if weights is None else weights.double()
    lam = spec["eigenvalues"][spec["eigenvalues"] > 0]
    order = torch.log2(w[w > 0]).sort()
    log_w, w_sorted = order.values, w[w > 0][order.indices]
    cum_w = torch.cat([w_sorted.new_zeros(1), w_sorted.cumsum(0)])
    cum_log_w = torch.cat([log_w.new_zeros(1), log_w.cumsum(0)])
    log_lam, rows = torch.log2(lam), len(log_w)

    def rate_and_distortion(log_theta: float) -> tuple[float, float]:
        cut = torch.searchsorted(log_w, log_theta - log_lam, right=True)  # rows below it leave component j empty
        active = rows - cut
        rate = ((cum_log_w[-1] - cum_log_w[cut]) + active * (log_lam - log_theta)).sum() / 2
        return float(rate), float((lam * cum_w[cut]).sum() + (active * 2.0**log_theta).sum())

    total = bits * len(w)
    lo, hi = float(log_w[0] + log_lam.min()) - 2 * bits - 1, float(log_w[-1] + log_lam.max())
    for _ in range(200 if total > 0 else 0):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if rate_and_distortion(mid)[0] > total else (lo, mid)
    return math.sqrt(rate_and_distortion(hi)[1] / float(w @ spec["row_sq"]))


def budget_bits(pct: float, dim: int) -> float:
    """Bits per row that `pct` % of the float32 (V, dim) matrix's bytes hold."""
    return pct / 100 * dim * 32


def bytes_for_error(spec: dict[str, Any], dim: int, error: float, weights: torch.Tensor | None = None) -> float:
    """The smallest byte budget (% of float32) at which the bound (with these row weights) reaches `error`."""
    lo, hi = 0.0, 100.0
    for _ in range(40):
        mid = (lo + hi) / 2
        lo, hi = (lo, mid) if bound_error(spec, budget_bits(mid, dim), weights) <= error else (mid, hi)
    return hi


def weighted_error(weight: torch.Tensor, approx: torch.Tensor, counts: torch.Tensor) -> float:
    """sqrt(sum_i c_i ||e_i - a_i||^2 / sum_i c_i ||e_i||^2): the relative error of the rows weighted by `counts`
    (how often text uses each row; ones give the whole-matrix relative error)."""
    err = (weight - approx).double().square().sum(1)
    norm = weight.double().square().sum(1)
    return float((counts @ err / (counts @ norm)).sqrt())


def fit(weight: torch.Tensor, asg_cfg: dict[str, Any], unigram: torch.Tensor | None = None) -> CompressedEmbedding:
    """The module an `asg` config fits to `weight` (through the fit cache), its codebooks rounded to their storage
    precision as the test scores them; `unigram` gives the row weights of asg.row_weights=unigram."""
    method = get_method(asg_cfg["method"])
    settings = method.resolve(asg_cfg, *weight.shape)
    if settings.get("row_weights") == "train":
        raise ValueError("asg.row_weights=train weights rows by a training split's tokens, which this fit has none of")
    row_weights = row_weights_from(settings, unigram, f"the {tuple(weight.shape)} matrix")
    module = method.build(weight, settings, None, **({} if row_weights is None else {"row_weights": row_weights}))
    module.storage_dtype = storage_dtype(settings)
    module.round_to_storage()
    return module


def unigram_weights(tokenizer_file: Path, vocab: int) -> torch.Tensor | None:
    """Each embedding row's probability under the tokenizer's unigram model (`asg.row_weights`); None where the
    file is absent or the tokenizer is not a unigram one."""
    return unigram_probabilities(tokenizer_file.read_text(), vocab) if tokenizer_file.is_file() else None


def study_cells(study: dict[str, Any], metric: str) -> list[dict[str, Any]]:
    """Each tested configuration of a dev-selection study with every seed run (`dev_selection.tested_cells`): its
    label, seeds, bytes as exported, mean fit error and mean test score as a share of the dense mean."""
    dense = [r["scores"][metric] for r in study["none"]["tests"].values() if r]
    cells = tested_cells(study, metric, statistics.mean(dense) if dense else None)
    labelled = [{"cell": f"{c.pop('method')} at {c.pop('size')}"} | c for c in cells]
    return sorted(labelled, key=lambda c: c["bytes_pct"])


def measure(
    source: str,
    weight: torch.Tensor,
    study: dict[str, Any] | None,
    metric: str,
    unigram: torch.Tensor | None = None,
    refit: bool = False,
) -> dict[str, Any]:
    """The bound at each budget (and with rows weighted by `unigram`), and each study cell against the bound at its
    own bytes; with `refit`, each `REFIT` cell's first seed fitted again for its unigram-weighted error."""
    spec, dim = spectrum(weight), weight.shape[1]
    out: dict[str, Any] = {
        "matrix": MATRICES[source][0],
        "shape": list(weight.shape),
        "mean_share_pct": 100
        * (1 - float(spec["eigenvalues"].sum()) * len(spec["row_sq"]) / float(spec["row_sq"].sum())),
        "bound": [
            {"bytes_pct": b, "bits": budget_bits(b, dim), "rel_error": bound_error(spec, budget_bits(b, dim))}
            | ({"weighted": bound_error(spec, budget_bits(b, dim), unigram)} if unigram is not None else {})
            for b in BUDGETS
        ],
        "cells": [],
    }
    for cell in study_cells(study, metric) if study else []:
        asg_cfg = cell.pop("asg")
        bits = budget_bits(cell["bytes_pct"], dim)
        cell["bound"] = bound_error(spec, bits)
        if refit and unigram is not None and asg_cfg["method"] in REFIT:
            approx = fit(weight, asg_cfg, unigram).dense_weight().detach().float()
            cell |= {"unigram_error": weighted_error(weight, approx, unigram), "fit_seed": asg_cfg["seed"]}
            cell["weighted_bound"] = bound_error(spec, bits, unigram)
        out["cells"].append(cell)
    kept = [c for c in out["cells"] if c["score_pct"] >= KEPT]
    if kept:
        worst = max(kept, key=lambda c: c["rel_error"])
        out["kept"] = worst | {"bound_bytes_pct": bytes_for_error(spec, dim, worst["rel_error"])}
        if unigram is not None and all("unigram_error" in c for c in kept):
            weighted = max(kept, key=lambda c: c["unigram_error"])
            out["kept_unigram"] = weighted | {
                "weighted_bytes_pct": bytes_for_error(spec, dim, weighted["unigram_error"], unigram)
            }
    return out


def report(rows: list[dict[str, Any]], missing: list[str]) -> str:
    lines = [
        "# How low a fit error the bytes allow",
        "",
        f"Command: `{command_line('experiments.rate_distortion')}`",
        "",
        "Bound: reverse water-filling over the row covariance's eigenvalues, the lowest error any code reaches on a",
        "Gaussian source with that covariance, with every stored byte spent on the row's codes (optimistic for every",
        "method). Cells: the committed dev-selection studies' tests (`experiments.dev_selection`), each at its",
        "dev-chosen settings; fit error and score are means over the cell's seeds, score as % of the dense mean.",
    ]
    for row in rows:
        lines += ["", f"## {row['matrix']} ({row['shape'][0]:,} x {row['shape'][1]})", ""]
        lines.append(f"The mean row holds {row['mean_share_pct']:.1f}% of ||E||_F^2 (counted free in the bound).")
        lines += [
            "",
            "| bytes kept % | bits per row | bound on the fit's rel. error "
            "| bound, rows weighted by unigram probability |",
            "|---|---|---|---|",
        ]
        lines += [
            f"| {b['bytes_pct']:g} | {b['bits']:.1f} | {b['rel_error']:.3f} | "
            + (f"{b['weighted']:.3f} |" if "weighted" in b else "— (no unigram tokenizer) |")
            for b in row["bound"]
        ]
        if not row["cells"]:
            lines += ["", "No dev-selection cell has every seed run yet."]
            continue
        refitted = any("unigram_error" in c for c in row["cells"])
        lines += [
            "",
            "| cell | seeds | bytes kept % | fit rel. error | bound at those bytes | above the bound "
            + ("| unigram-weighted error (refit) | weighted bound | above it " if refitted else "")
            + "| score % of dense |",
            "|---|---|---|---|---|---|" + ("---|---|---|" if refitted else "") + "---|",
        ]
        lines += [
            f"| {c['cell']} | {c['seeds']} | {c['bytes_pct']:.3f} | {c['rel_error']:.3f} | {c['bound']:.3f} | "
            f"{c['rel_error'] - c['bound']:+.3f} | "
            + (_weighted_cells(c) if refitted else "")
            + f"{c['score_pct']:.1f} |"
            for c in row["cells"]
        ]
        above = [c["rel_error"] - c["bound"] for c in row["cells"]]
        lines += ["", f"Every cell's fit sits {min(above):.3f} to {max(above):.3f} above the bound at its bytes."]
        if "kept" in row:
            k = row["kept"]
            lines += [
                "",
                f"Of the cells that kept >= {KEPT}% of the dense score, the highest fit error is {k['rel_error']:.3f} "
                f"({k['cell']}, {k['score_pct']:.1f}%). The bound reaches that error only at "
                f"{k['bound_bytes_pct']:.2f}% of the bytes: below that, even an ideal code for a Gaussian source of "
                "this covariance has a higher error.",
            ]
            if "kept_unigram" in row:
                u = row["kept_unigram"]
                lines += [
                    "",
                    f"Weighted by the tokenizer's unigram probabilities (the error on the pieces text uses most), the "
                    f"cells that kept >= {KEPT}% had errors of at most {u['unigram_error']:.3f} ({u['cell']}). The "
                    "weighted bound, which lets a code spend its bits on those pieces, reaches that error at "
                    f"{u['weighted_bytes_pct']:.2f}% of the bytes.",
                ]
            elif refitted or any("weighted" in b for b in row["bound"]):
                lines += ["", "Unigram-weighted errors: run with --refit to fit the cells again and measure them."]
        else:
            lines += ["", f"No cell kept >= {KEPT}% of the dense score."]
    if missing:
        lines += ["", "Not measured:", *missing]
    return "\n".join([*lines, ""])


def _weighted_cells(cell: dict[str, Any]) -> str:
    if "unigram_error" not in cell:
        return "— | — | — | "
    u, b = cell["unigram_error"], cell["weighted_bound"]
    return f"{u:.3f} (seed {cell['fit_seed']}) | {b:.3f} | {u - b:+.3f} | "


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--e5-dir", type=Path, default=_default_e5_dir())
    parser.add_argument("--out-dir", type=Path, default=RESULTS / "rate_distortion")
    parser.add_argument(
        "--refit",
        action="store_true",
        help=f"fit each {'/'.join(REFIT)} cell's first seed again (the fit cache, the current k-means) to measure its "
        "unigram-weighted error; minutes per cell",
    )
    args = parser.parse_args(argv)
    rows, missing = [], []
    for source, (name, setting) in MATRICES.items():
        path = _real_file(source, args.e5_dir)
        if path is None or not path.is_file():
            missing.append(f"- {name}: no matrix; {HINTS[source]}")
            continue
        study_file = RESULTS / f"dev_selection_{setting}" / "dev_selection.json"
        study = json.loads(study_file.read_text())["study"] if study_file.is_file() else None
        if study is None:
            missing.append(f"- {name}: no {study_file.relative_to(RESULTS.parent.parent)}: bound only")
        metric = SETTINGS[setting]["test_metric"]
        weight = _load({"source": source, "path": path})
        unigram = unigram_weights(path.parent / "tokenizer.json", weight.shape[0])
        rows.append(measure(source, weight, study, metric, unigram, args.refit))
    write_json_atomic(args.out_dir / "rate_distortion.json", {"rows": rows, "missing": missing})
    text = report(rows, missing)
    write_text_atomic(args.out_dir / "rate_distortion.md", text)
    print(text)
    return rows


if __name__ == "__main__":
    main()
