"""Per-language test tables over seeds: each configuration's mean ± std per language and its ratio to dense."""

from __future__ import annotations

import statistics

from asg.results import exported_bytes_pct
from experiments.dev_selection import size_text
from experiments.runner import mean_std


def languages(runs: list[dict]) -> list[str]:
    """The languages the runs were tested on, sorted, then their average."""
    langs = sorted({key.split("/")[1] for r in runs for key in r["scores"] if key.startswith("test/")} - {"avg"})
    return [*langs, "avg"]


def table(done: dict[str, list[dict]], metric: str) -> list[str]:
    """Markdown rows: a configuration per row (its size, bytes, fit error, seeds, per-language mean ± std and lowest
    language relative to dense), each compressed one followed by its ratio of means to `done["none"]`."""
    langs = languages([r for runs in done.values() for r in runs])
    dense = {lang: [r["scores"][f"test/{lang}/{metric}"] for r in done.get("none", [])] for lang in langs}
    lines = [
        "| method | size | bytes kept % | params kept % | fit rel. error | seeds | "
        + " | ".join(langs)
        + " | lowest language, relative |",
        "|---|---|---|---|---|---|" + "---|" * len(langs) + "---|",
    ]
    for prefix, runs in done.items():
        if not runs:
            lines.append(f"| {prefix} | not run yet |" + " |" * (len(langs) + 4))
            continue
        c = runs[0]["compression"]
        size = "—" if prefix == "none" else size_text(c)
        error = statistics.mean(r["compression"]["rel_error"] for r in runs) if prefix != "none" else 0.0
        cells, relative = [], {}
        for lang in langs:
            scores = [r["scores"][f"test/{lang}/{metric}"] for r in runs]
            cells.append(mean_std(scores))
            if dense[lang] and statistics.mean(dense[lang]) > 0:
                relative[lang] = 100 * statistics.mean(scores) / statistics.mean(dense[lang])
        per_lang = {k: v for k, v in relative.items() if k != "avg"}
        lowest = min(per_lang, key=per_lang.get) if per_lang and prefix != "none" else None
        lines.append(
            f"| {prefix} | {size} | {exported_bytes_pct(c):.3f} | {c['params_kept_pct']:.3f} | {error:.3f} | "
            f"{len(runs)} | " + " | ".join(cells) + f" | {f'{lowest} {per_lang[lowest]:.1f}%' if lowest else '—'} |"
        )
        if prefix != "none" and relative:
            lines.append(
                f"| {prefix} / dense | | | | | | "
                + " | ".join(f"{relative[lang]:.1f}%" if lang in relative else "—" for lang in langs)
                + " | |"
            )
    return lines
