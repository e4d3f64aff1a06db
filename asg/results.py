"""The machine-readable record of a run: metrics.json, written atomically."""

from __future__ import annotations

import json
import os
import platform
import tempfile
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
import transformers

import asg


def write_json_atomic(path: str | os.PathLike, payload: Any) -> Path:
    """Write JSON to a temporary file in the same folder, then rename: readers never see half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(payload, f, indent=2, sort_keys=True)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise
    return path


def environment() -> dict[str, str]:
    """Versions that decide whether two runs are comparable."""
    return {
        "asg": asg.__version__,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "pytorch_lightning": pl.__version__,
        "python": platform.python_version(),
        "device": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu",
    }
