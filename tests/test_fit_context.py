"""Fits ignore the ambient default device and dtype (Lightning's configure_model sets both), and land where the
model lives; every precision a CPU user can pick runs the pipeline."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager

import pytest
import torch
from transformers import AutoModelForTokenClassification

from asg.surgery import compress_model, resolve_fit_device
from tests.test_baselines import asg_cfg, fit, random_weight
from tests.test_pipeline import tiny_run


@contextmanager
def default_dtype(dtype: torch.dtype) -> Iterator[None]:
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(previous)


# What Lightning's tensor_init_context does: an accelerator as default device (meta stands in for CUDA here, and
# fails on any tensor created without a device), a half default dtype for the *-true precisions.
AMBIENT: dict[str, Callable[[], AbstractContextManager]] = {
    "meta_device": lambda: torch.device("meta"),
    "bf16_default": lambda: default_dtype(torch.bfloat16),
    "fp16_default": lambda: default_dtype(torch.float16),
}
SETTINGS = {"pq": {"m": 4, "k": 16}, "sg": {"k": 16}, "rq": {"m": 4, "k": 32, "stages": 2}, "lowrank": {"rank": 4}}
SETTINGS["tiered"] = {"tier_fractions": [0.25, 0.5], "tier_m": [8, 4, 2], "k": 16}


@pytest.mark.parametrize("ambient", sorted(AMBIENT))
@pytest.mark.parametrize("method", sorted(SETTINGS))
def test_fit_is_independent_of_ambient_device_and_dtype(method, ambient):
    weight = random_weight(600, 32)
    plain = fit(weight, method, iters=4, seed=3, **SETTINGS[method])
    with AMBIENT[ambient]():
        inside = fit(weight, method, iters=4, seed=3, **SETTINGS[method])
    assert inside.rel_error == plain.rel_error
    for (name, a), (_, b) in zip(plain.state_dict().items(), inside.state_dict().items(), strict=True):
        assert b.device.type == "cpu" and b.dtype == a.dtype, name
        assert torch.equal(a, b), name
    if method == "tiered":  # its id boundaries, a buffer outside the state dict
        assert inside.ends.device.type == "cpu" and torch.equal(inside.ends, plain.ends)
        assert torch.equal(inside(torch.arange(600)), plain(torch.arange(600)))
    elif method != "lowrank":
        assert plain.codebooks.dtype == torch.float32 and not plain.codes.is_floating_point()


def test_compress_model_lands_on_the_models_dtype_under_a_trainers_context(tiny_dirs):
    model = AutoModelForTokenClassification.from_pretrained(tiny_dirs["mbert"], num_labels=3).to(torch.bfloat16)
    reference = AutoModelForTokenClassification.from_pretrained(tiny_dirs["mbert"], num_labels=3).to(torch.bfloat16)
    with torch.device("meta"), default_dtype(torch.bfloat16):  # configure_model under bf16-true
        stats = compress_model(model, asg_cfg("pq", m=4, k=16, fit_device="auto"), device="cpu")
    compress_model(reference, asg_cfg("pq", m=4, k=16, fit_device="cpu"))  # a plain fit, for the codes
    embedding = model.get_input_embeddings()
    assert embedding.codebooks.dtype == torch.bfloat16 and embedding.codebooks.device.type == "cpu"
    assert embedding.codes.dtype == torch.uint8
    assert torch.equal(embedding.codes, reference.get_input_embeddings().codes)
    assert stats["codebook_bytes"] == 4 * 16 * (model.config.hidden_size // 4) * 2  # bf16 codebooks
    ids = torch.tensor([[2, 5, 7]])
    assert model(input_ids=ids).logits.dtype == torch.bfloat16


def test_fit_device_values():
    assert resolve_fit_device("auto", torch.device("cpu")) == torch.device("cpu")
    assert resolve_fit_device(None, "cpu") == torch.device("cpu")
    assert resolve_fit_device("cpu", torch.device("meta")) == torch.device("cpu")
    with pytest.raises(ValueError, match="asg.fit_device=gpu0 is not a device; use auto, cpu, cuda"):
        resolve_fit_device("gpu0")
    with pytest.raises(ValueError, match="fits run on cpu or cuda"):
        resolve_fit_device("meta")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="no CUDA device is visible here; use asg.fit_device=auto or cpu"):
            resolve_fit_device("cuda")


def test_a_bad_fit_device_fails_before_any_data_is_read(tmp_path, tiny_dirs):
    from asg.train import train
    from tests.test_pipeline import make_cfg

    cfg = make_cfg(
        tmp_path,
        "model=mbert",
        f"model.name_or_path={tiny_dirs['mbert']}",
        "data.dir=/nonexistent",
        "asg.fit_device=tpu",
    )
    with pytest.raises(ValueError, match="asg.fit_device=tpu"):
        train(cfg)


@pytest.mark.parametrize("precision", ["bf16-true", "bf16-mixed"])
@pytest.mark.parametrize("method", ["none", "pq"])
def test_half_precision_pipeline_runs_on_cpu(tmp_path, tiny_dirs, shared_data, precision, method):
    metrics = tiny_run(
        tmp_path, tiny_dirs, shared_data, "mbert", "task=bc5cdr", f"asg={method}", f"trainer.precision={precision}"
    )
    on_disk = json.loads((tmp_path / "metrics.json").read_text())
    assert on_disk["scores"] == metrics["scores"] and "test/en/f1" in metrics["scores"]
    assert metrics["steps"] == 1
    if method == "pq":
        assert metrics["compression"]["rel_error"] > 0 and metrics["compression"]["code_dtype"] == "torch.uint8"
