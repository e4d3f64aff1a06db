"""The machine-readable record of a run: metrics.json, written atomically."""

from __future__ import annotations

import functools
import json
import os
import platform
import re
import subprocess
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

import asg

_UMASK = os.umask(0)
os.umask(_UMASK)


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> Path:
    """Write bytes to a temporary file in the same folder, then rename: readers never see half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes owner-only files; results are meant to be shared
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise
    return path


def write_text_atomic(path: str | os.PathLike, text: str) -> Path:
    """`write_bytes_atomic` for UTF-8 text."""
    return write_bytes_atomic(path, text.encode("utf-8"))


def write_json_atomic(path: str | os.PathLike, payload: Any) -> Path:
    """Write JSON to a temporary file in the same folder, then rename: readers never see half a file."""
    return write_text_atomic(path, json.dumps(payload, indent=2, sort_keys=True))


def flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """A nested config or record as {dotted key: leaf}; lists and empty mappings are leaves."""
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, Mapping) and value:
            flat |= flatten(value, f"{prefix}{key}.")
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def exported_bytes_pct(compression: Mapping[str, Any]) -> float | None:
    """Kept bytes as `asg.export` stores them, code tables bit-packed (`bytes_kept_pct_packed`), as a percentage of
    the dense matrix; `bytes_kept_pct` (codes in their in-memory integer dtype) for methods without a code table."""
    return compression.get("bytes_kept_pct_packed", compression.get("bytes_kept_pct"))


def size_text(c: Mapping[str, Any]) -> str:
    """A compressed embedding's shape in its method's terms, from a run's compression stats."""
    if c["method"] == "tiered":
        return ", ".join(f"{r:,} ids m={m}" for r, m in zip(c["tier_rows"], c["tier_m"], strict=True)) + f"; k={c['k']}"
    if c["method"] == "lowrank":
        return f"rank {c['rank']}"
    if c["method"] == "rq":
        return f"m={c['m']}, {c['stages']} x k={c['k_per_stage']}"
    return f"m={c['m']}, k={c['k']}" if c["m"] > 1 else f"k={c['k']}"


# what the dirty flag looks at: the work tree but the results files a study rewrites while it runs
CODE_PATHS = (".", ":(exclude)experiments/results")


def _git(*args: str) -> str:
    root = Path(asg.__file__).resolve().parent.parent
    done = subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True, check=True, timeout=30)
    return done.stdout


def code_version() -> dict[str, Any]:
    """The code that made a result: the git commit and whether the work tree's code differed from it (committed
    results files aside), or, for an installed copy without its repository, the package version alone."""
    try:
        commit = _git("rev-parse", "HEAD").strip()
        status = _git("status", "--porcelain", "--untracked-files=no", "--", *CODE_PATHS)
    except (OSError, subprocess.SubprocessError):  # no git, or not a checkout: an installed package
        return {"package": asg.__version__, "git_commit": None, "git_dirty": None}
    return {"package": asg.__version__, "git_commit": commit, "git_dirty": bool(status.strip())}


def fit_version(metrics: Mapping[str, Any]) -> int | None:
    """The k-means version (`asg.quantize.FIT_VERSION`) behind a run's codes: as metrics.json records it, else, for
    runs from before it was recorded, as `asg/quantize.py` set it at the run's commit when the tree was clean.
    None where neither tells (a dirty tree, or a commit this repository lacks)."""
    if "fit_version" in metrics:
        return metrics["fit_version"]
    code = metrics.get("code") or {}
    if not code.get("git_commit") or code.get("git_dirty") is not False:
        return None
    return _fit_version_at(code["git_commit"])


@functools.cache  # a table reads many runs of few commits
def _fit_version_at(commit: str) -> int | None:
    try:
        source = _git("show", f"{commit}:asg/quantize.py")
    except (OSError, subprocess.SubprocessError):
        return None
    found = re.search(r"^FIT_VERSION = (\d+)", source, re.MULTILINE)
    return int(found.group(1)) if found else None


def environment() -> dict[str, str]:
    """Versions that decide whether two runs are comparable."""
    # imported here: the atomic writers above serve light modules too (asg.cache, under asg.quantize)
    import pytorch_lightning as pl
    import transformers

    return {
        "asg": asg.__version__,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "pytorch_lightning": pl.__version__,
        "python": platform.python_version(),
        "device": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu",
    }
