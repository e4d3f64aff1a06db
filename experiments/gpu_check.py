"""The GPU path end to end, in one command that fits a lent GPU's session (one run under 8 minutes).

Here, once (needs PyPI and ../shared beside the checkout; writes the git-ignored .whl/ and .gpu_check/):

    python -m experiments.gpu_check prepare

On the GPU machine (torch, Lightning, transformers, sentencepiece, safetensors and pandas are there; the packages
they lack travel as wheels in .whl/, the BC5CDR slice and tokenizer corpus in .gpu_check/; carry both):

    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
        .whl/*.whl && PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1 python3 -m experiments.gpu_check run --out $OUT

It writes gpu_check.{json,md} to --out; commit them to experiments/results/. Each check runs on its own, so one
failure is recorded and the others still run; the command exits non-zero if any check failed:
  - pq_fit: product_quantize on the GPU against the CPU at the paper's size (a Gaussian 250,000 x 768 matrix,
    m=32, k=1024, the default iterations), same seed: each one's error, time and their ratio;
  - fine_tune: trainer=gpu runs of dense and ASG on tiny random-init copies of the four paper checkpoints (their
    real file layouts, built there by tests/paper_models.py) on the BC5CDR slice, in bf16-mixed, bf16-true,
    16-mixed and 32-true;
  - head: the factorised ASG output head against the dense V x d product at V=250,000, d=768: time, peak memory;
  - export: a model compressed on the GPU, exported, reloaded with load_compressed: identical logits on the GPU.
`run --device cpu --quick` runs every check at toy sizes on the CPU (the test suite does).
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from experiments.runner import ROOT

WORK = ROOT / ".gpu_check"  # the BC5CDR slice and the tokenizer corpus that travel with the command
WHEELS = ROOT / ".whl"
# what the GPU image lacks of what `asg.train` imports on the local-data path (its other needs are there)
CARRIED = ("hydra-core", "omegaconf", "antlr4-python3-runtime", "seqeval")
SLICE = {"train": 400, "devel": 200, "test": 200}  # BC5CDR sentences per split
FULL = {"vocab": 250_000, "dim": 768, "m": 32, "k": 1024, "iters": 25, "steps": 30, "batch": 8, "decode": 8}
QUICK = {"vocab": 3000, "dim": 64, "m": 8, "k": 32, "iters": 3, "steps": 2, "batch": 2, "decode": 2}
ARCHITECTURES = ("mbert", "xlmr", "mt5", "biobert")
# (model, asg method, precision): dense and ASG for every architecture under the GPU trainer's bf16-mixed, ASG under
# bf16-true for each, and mBERT's ASG under the two other precisions a Lightning user may pick
RUNS = (
    [(arch, method, "bf16-mixed") for arch in ARCHITECTURES for method in ("none", "pq")]
    + [(arch, "pq", "bf16-true") for arch in ARCHITECTURES]
    + [("mbert", "pq", "16-mixed"), ("mbert", "pq", "32-true")]
)


# ---- prepare (here) ---------------------------------------------------------------------------------------------


def prepare_data(shared: Path, work: Path = WORK) -> None:
    """Write the BC5CDR slice (the release's layout) and the tokenizer corpus into `work`."""
    from tests.tiny_models import corpus

    source = shared / "data" / "bc5cdr" / "BC5CDR-IOB"
    target = work / "data" / "bc5cdr" / "BC5CDR-IOB"
    target.mkdir(parents=True, exist_ok=True)
    for split, sentences in SLICE.items():
        blocks = (source / f"{split}.tsv").read_text(encoding="utf-8").strip().split("\n\n")
        (target / f"{split}.tsv").write_text("\n\n".join(blocks[:sentences]) + "\n", encoding="utf-8")
    (work / "corpus.txt").write_text("\n".join(corpus()) + "\n", encoding="utf-8")


def prepare_wheels(wheels: Path = WHEELS) -> None:
    """The carried packages as wheels, pinned to the versions installed here."""
    from importlib.metadata import version

    wheels.mkdir(exist_ok=True)
    # pure-Python packages, so a wheel built here installs on the GPU image's Python
    pins = [f"{name}=={version(name)}" for name in CARRIED]
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(wheels), *pins], check=True)


# ---- checks (there) ---------------------------------------------------------------------------------------------


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def check_pq_fit(device: torch.device, size: dict[str, Any]) -> dict[str, Any]:
    """The same fit (matrix, settings, seed) on `device` and on the CPU: errors, times, ratio."""
    from asg.quantize import product_quantize

    weight = torch.randn(size["vocab"], size["dim"], generator=torch.Generator().manual_seed(0))
    options = {"m": size["m"], "k": size["k"], "iters": size["iters"], "seed": 0, "sample_rows": None}
    result: dict[str, Any] = {"shape": list(weight.shape), **options, "cpu_threads": torch.get_num_threads()}
    fits = {}
    for name, where in (("device", device), ("cpu", torch.device("cpu"))):
        _sync(where)
        start = time.perf_counter()
        fits[name] = product_quantize(weight.to(where), **options)
        _sync(where)
        result[f"{name}_seconds"] = round(time.perf_counter() - start, 3)
        result[f"{name}_rel_error"] = fits[name].rel_error
    again = product_quantize(weight.to(device), **options)  # the device's own repeatability
    result["device_repeat_identical"] = bool(torch.equal(again.codes.cpu(), fits["device"].codes.cpu()))
    result["codes_agree_pct"] = 100 * (fits["device"].codes.cpu() == fits["cpu"].codes).float().mean().item()
    result["time_ratio_device_over_cpu"] = round(result["device_seconds"] / result["cpu_seconds"], 4)
    return result


def build_models(root: Path, corpus: list[str]) -> dict[str, Path]:
    """Tiny random-init checkpoints in the real Hub layouts of the four paper models."""
    from tests.paper_models import save_biobert, save_mbert, save_mt5, save_xlmr

    builders = {"mbert": save_mbert, "xlmr": save_xlmr, "mt5": save_mt5, "biobert": save_biobert}
    return {name: build(root / name, corpus) for name, build in builders.items()}


def fine_tune(
    model: str, model_dir: Path, method: str, precision: str, *, device: torch.device, data: Path, out: Path, steps: int
) -> dict[str, Any]:
    """One pipeline run (asg.train.train on the composed config tree) with the GPU trainer, or the CPU's in tests."""
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    from asg.train import train

    overrides = [
        f"model={model}",
        f"model.name_or_path={model_dir}",
        "task=bc5cdr",
        f"asg={method}",
        "asg.m=8",
        "asg.k=64",
        "asg.cache_dir=null",
        "+asg.progress=false",
        f"data.dir={data}",
        "data.batch_size=8",
        f"trainer={'gpu' if device.type == 'cuda' else 'cpu'}",
        f"trainer.precision={precision}",
        f"trainer.max_steps={steps}",
        "trainer.enable_progress_bar=false",
        "trainer.limit_val_batches=0",
        "logger=csv",
        "checkpoint.keep=none",
        f"paths.output_dir={out}",
    ]
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("config", overrides=overrides)
    OmegaConf.resolve(cfg)
    started = time.perf_counter()
    metrics = train(cfg)
    c = metrics["compression"]
    return {
        "model": model,
        "method": method,
        "precision": precision,
        "steps": metrics["steps"],
        "test_f1": metrics["scores"]["test/en/f1"],
        "head": c.get("head"),
        "fit_device": c.get("fit_device"),
        "fit_seconds": c.get("fit_seconds"),
        "rel_error": c.get("rel_error"),
        "seconds": round(time.perf_counter() - started, 2),
    }


def check_fine_tunes(device: torch.device, size: dict[str, Any], work: Path, tmp: Path) -> list[dict[str, Any]]:
    corpus = (work / "corpus.txt").read_text(encoding="utf-8").splitlines()
    dirs = build_models(tmp / "models", corpus)
    rows = []
    for i, (model, method, precision) in enumerate(RUNS):
        if device.type != "cuda" and precision == "16-mixed":
            continue  # fp16 autocast is a GPU precision
        try:
            row = fine_tune(
                model,
                dirs[model],
                method,
                precision,
                device=device,
                data=work / "data",
                out=tmp / f"run{i}",
                steps=size["steps"],
            )
        except Exception as err:  # one broken cell must not hide the others
            row = {"model": model, "method": method, "precision": precision, "error": _error(err)}
        print(json.dumps(row), flush=True)
        rows.append(row)
    return rows


def _peak_and_seconds(fn: Callable[[], torch.Tensor], device: torch.device, reps: int) -> tuple[float, float]:
    """(peak memory in MiB above the start, median seconds) of fn with backward, on `device`."""
    fn().sum().backward()  # warm-up
    times = []
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    base = torch.cuda.memory_allocated(device) if device.type == "cuda" else 0
    for _ in range(reps):
        _sync(device)
        start = time.perf_counter()
        fn().sum().backward()
        _sync(device)
        times.append(time.perf_counter() - start)
    peak = (torch.cuda.max_memory_allocated(device) - base) / 2**20 if device.type == "cuda" else float("nan")
    return peak, sorted(times)[len(times) // 2]


def check_head(device: torch.device, size: dict[str, Any]) -> dict[str, Any]:
    """Logits of a decoding batch through the factorised head and through the dense V x d product."""
    import torch.nn.functional as F

    from asg.embedding import ASGEmbedding

    gen = torch.Generator().manual_seed(0)
    m, k, dim = size["m"], size["k"], size["dim"]
    codes = torch.randint(k, (size["vocab"], m), generator=gen)
    embedding = ASGEmbedding(codes, torch.randn(m, k, dim // m, generator=gen)).to(device)
    hidden = torch.randn(size["decode"], 1, dim, device=device, requires_grad=True)
    factorised = embedding.logits(hidden)
    dense = F.linear(hidden, embedding.dense_weight())
    result = {"vocab": size["vocab"], "dim": dim, "m": m, "k": k, "hidden": list(hidden.shape)}
    result["max_abs_diff"] = (factorised - dense).abs().max().item()
    del factorised, dense
    for name, fn in (
        ("factorised", lambda: embedding.logits(hidden)),
        ("dense", lambda: F.linear(hidden, embedding.dense_weight())),
    ):
        peak, seconds = _peak_and_seconds(fn, device, reps=10)
        result[f"{name}_peak_mib"], result[f"{name}_ms"] = round(peak, 1), round(1000 * seconds, 3)
    result["time_ratio"] = round(result["factorised_ms"] / result["dense_ms"], 4)
    return result


def check_export(device: torch.device, size: dict[str, Any], work: Path, tmp: Path) -> dict[str, Any]:
    """Compress on `device`, export, reload, and compare the logits there."""
    from transformers import AutoModelForTokenClassification

    from asg.export import load_compressed, save_compressed
    from asg.surgery import compress_model

    corpus = (work / "corpus.txt").read_text(encoding="utf-8").splitlines()
    from tests.paper_models import save_mbert

    source = save_mbert(tmp / "export_src", corpus)
    model = AutoModelForTokenClassification.from_pretrained(source, num_labels=5)
    cfg = {"method": "pq", "m": 8, "k": 64, "iters": size["iters"], "seed": 0, "sample_rows": None}
    stats = compress_model(model, cfg | {"progress": False, "fit_device": "auto"}, device=device)
    model = model.to(device).eval()
    save_compressed(model, tmp / "export", family="token_classification")
    loaded = load_compressed(tmp / "export").to(device)
    ids = torch.randint(5, model.config.vocab_size, (2, 16), generator=torch.Generator().manual_seed(1)).to(device)
    with torch.no_grad():
        before, after = model(input_ids=ids).logits, loaded(input_ids=ids).logits
    return {"fit_device": stats.get("fit_device"), "identical_logits": bool(torch.equal(before, after))}


def _error(err: BaseException) -> str:
    return "".join(traceback.format_exception_only(type(err), err)).strip()


def run(device: torch.device, *, quick: bool, work: Path = WORK, out: Path) -> dict[str, Any]:
    """Every check, each on its own; returns (and writes to `out`) what each measured or how it failed."""
    if not (work / "corpus.txt").is_file():
        raise FileNotFoundError(f"{work} has no corpus.txt: run `python -m experiments.gpu_check prepare` first")
    size = QUICK if quick else FULL
    from asg.results import environment

    result: dict[str, Any] = {"environment": environment(), "quick": quick, "device": str(device), "checks": {}}
    with tempfile.TemporaryDirectory() as scratch:
        tmp = Path(scratch)
        checks: dict[str, Callable[[], Any]] = {
            "pq_fit": lambda: check_pq_fit(device, size),
            "head": lambda: check_head(device, size),
            "export": lambda: check_export(device, size, work, tmp),
            "fine_tune": lambda: check_fine_tunes(device, size, work, tmp),
        }
        for name, check in checks.items():
            started = time.perf_counter()
            try:
                result["checks"][name] = {"ok": True, "result": check()}
            except Exception as err:
                result["checks"][name] = {"ok": False, "error": _error(err), "traceback": traceback.format_exc()}
            result["checks"][name]["seconds"] = round(time.perf_counter() - started, 1)
            print(f"{name}: {json.dumps(result['checks'][name])[:2000]}", flush=True)
    fine = result["checks"]["fine_tune"]
    if fine["ok"] and any("error" in row for row in fine["result"]):
        fine["ok"] = False
    write(result, out)
    return result


def markdown(result: dict[str, Any]) -> str:
    env = result["environment"]
    lines = [
        "# GPU check",
        "",
        f"Device: {env['device']} ({result['device']}); torch {env['torch']}, transformers {env['transformers']}, "
        f"Lightning {env['pytorch_lightning']}.{' Quick sizes (a smoke test).' if result['quick'] else ''}",
        "",
        "Command (see experiments/gpu_check.py): `python3 -m experiments.gpu_check run --out $OUT`",
        "",
    ]
    for name, check in result["checks"].items():
        lines.append(f"## {name}: {'ok' if check['ok'] else 'FAILED'} ({check['seconds']} s)")
        lines.append("")
        if not check["ok"] and "error" in check:
            lines += ["```", check["error"], "```", ""]
            continue
        rows = check["result"] if isinstance(check["result"], list) else [check["result"]]
        keys = list(dict.fromkeys(key for row in rows for key in row))
        lines += ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
        lines += ["| " + " | ".join(str(row.get(key, "")) for key in keys) + " |" for row in rows]
        lines.append("")
    return "\n".join(lines)


def write(result: dict[str, Any], out: Path) -> None:
    from asg.results import write_json_atomic, write_text_atomic

    write_json_atomic(out / "gpu_check.json", result)
    write_text_atomic(out / "gpu_check.md", markdown(result) + "\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    prep = sub.add_parser("prepare", help="write .gpu_check/ (data slice, corpus) and .whl/ (carried wheels)")
    prep.add_argument("--shared", type=Path, default=ROOT.parent / "shared")
    go = sub.add_parser("run", help="run every check and write gpu_check.{json,md}")
    go.add_argument("--out", type=Path, required=True)
    go.add_argument("--device", default="cuda", help="cuda (the point of it) or cpu (a smoke test)")
    go.add_argument("--quick", action="store_true", help="toy sizes")
    args = parser.parse_args(argv)
    if args.command == "prepare":
        prepare_data(args.shared)
        prepare_wheels()
        print(f"wrote {WORK} and {WHEELS}; now: {shlex.join(['python3', '-m', 'experiments.gpu_check', 'run'])}")
        return 0
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("no CUDA device is visible: run this on the GPU machine, or pass --device cpu --quick")
    result = run(device, quick=args.quick, out=args.out)
    return 0 if all(check["ok"] for check in result["checks"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
