"""The PQ fit cache: hits skip the fit, keys follow every input, damaged files are refitted, writers do not clash."""

import logging
import multiprocessing
import stat

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

import asg.quantize
import asg.results
from asg import cache
from asg.quantize import product_quantize

SETTINGS = {"m": 4, "k": 8, "iters": 5}


def _weight(seed: int = 0) -> torch.Tensor:
    return torch.randn(500, 16, generator=torch.Generator().manual_seed(seed))


def _count_fits(monkeypatch, backend: str = "torch") -> list:
    """Wrap the backend's fit so calls are counted; returns the (growing) list of calls."""
    name = f"_fit_{backend}"
    real, calls = getattr(asg.quantize, name), []

    def counted(*args, **kwargs):
        calls.append(kwargs)
        return real(*args, **kwargs)

    monkeypatch.setattr(asg.quantize, name, counted)
    return calls


def _forbid_fit(monkeypatch) -> None:
    def no_fit(*args, **kwargs):
        raise AssertionError("a cache hit must not fit")

    monkeypatch.setattr(asg.quantize, "_fit_torch", no_fit)


def _entries(cache_dir) -> list:
    return sorted(cache_dir.iterdir())


def _assert_same(a, b) -> None:
    assert torch.equal(a.codes, b.codes) and a.codes.dtype == b.codes.dtype == torch.int64
    assert torch.equal(a.codebooks, b.codebooks) and a.rel_error == b.rel_error


def test_second_call_hits_the_cache_and_returns_identical_tensors(tmp_path, monkeypatch, caplog):
    caplog.set_level(logging.INFO, logger="asg.cache")
    first = product_quantize(_weight(), cache_dir=tmp_path, **SETTINGS)
    assert "PQ cache miss" in caplog.text
    [entry] = _entries(tmp_path)
    assert entry.suffix == ".safetensors"

    _forbid_fit(monkeypatch)
    second = product_quantize(_weight(), cache_dir=tmp_path, **SETTINGS)

    _assert_same(first, second)
    assert f"PQ cache hit: {entry}" in caplog.text


def test_codes_are_stored_in_their_small_dtype(tmp_path):
    product_quantize(_weight(), cache_dir=tmp_path, **SETTINGS)
    [entry] = _entries(tmp_path)
    tensors = load_file(entry)
    assert tensors["codes"].dtype == torch.uint8 and tensors["codebooks"].dtype == torch.float32


def test_one_sub_space_with_wide_codes_round_trips(tmp_path, monkeypatch):
    """m=1 with k > 256 (sg at a byte budget): int16 codes of shape (V, 1), whose strides may be any."""
    first = product_quantize(_weight(), m=1, k=300, iters=2, seed=0, sample_rows=None, cache_dir=tmp_path)
    assert tuple(first.codes.shape) == (500, 1)
    _forbid_fit(monkeypatch)
    _assert_same(first, product_quantize(_weight(), m=1, k=300, iters=2, seed=0, sample_rows=None, cache_dir=tmp_path))


def test_checksum_changes_with_one_element():
    weight = _weight()
    perturbed = weight.clone()
    perturbed[123, 7] += 1e-6
    assert cache.matrix_checksum(weight) != cache.matrix_checksum(perturbed)
    assert cache.matrix_checksum(weight) == cache.matrix_checksum(weight.double())  # float32 bytes either way


@pytest.mark.parametrize(
    "change",
    [
        *({"weight": "perturbed"}, {"m": 2}, {"k": 16}, {"seed": 1}, {"iters": 6}, {"init": "random"}),
        *({"backend": "faiss"}, {"row_weights": "zipf"}),
    ],
    ids=lambda change: next(iter(change)),
)
def test_key_follows_every_input(tmp_path, monkeypatch, change):
    if change.get("backend") == "faiss":
        pytest.importorskip("faiss")
    product_quantize(_weight(), cache_dir=tmp_path, **SETTINGS)
    calls = _count_fits(monkeypatch, change.get("backend", "torch"))
    weight = _weight()
    if "weight" in change:
        weight[123, 7] += 1e-6
    options = SETTINGS | {key: value for key, value in change.items() if key != "weight"}
    entries = 2
    if "row_weights" in change:  # a weighted fit, then one with other weights: two misses
        options["row_weights"] = 1 / torch.arange(1.0, weight.shape[0] + 1)
        product_quantize(weight, cache_dir=tmp_path, **options)
        options["row_weights"] = options["row_weights"].sqrt()
        calls.clear()
        entries = 3

    product_quantize(weight, cache_dir=tmp_path, **options)

    assert len(calls) == 1  # a miss: the changed input fitted afresh
    assert len(_entries(tmp_path)) == entries


def test_a_new_fit_version_misses_the_cache(tmp_path, monkeypatch):
    product_quantize(_weight(), cache_dir=tmp_path, **SETTINGS)
    calls = _count_fits(monkeypatch)
    monkeypatch.setattr(asg.quantize, "FIT_VERSION", asg.quantize.FIT_VERSION + 1)
    product_quantize(_weight(), cache_dir=tmp_path, **SETTINGS)
    assert len(calls) == 1 and len(_entries(tmp_path)) == 2  # the older algorithm's fit is not reused


def test_no_cache_dir_writes_nothing(tmp_path, monkeypatch):
    calls = _count_fits(monkeypatch)
    product_quantize(_weight(), **SETTINGS)
    product_quantize(_weight(), **SETTINGS)
    assert len(calls) == 2 and not _entries(tmp_path)


def _flip_middle(path) -> None:
    data = bytearray(path.read_bytes())
    middle = len(data) // 2
    data[middle : middle + 4] = bytes(b ^ 0xFF for b in data[middle : middle + 4])
    path.write_bytes(bytes(data))


def _truncate(path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _wrong_key(path) -> None:
    """A well-formed file whose metadata names another key (as if another setting had been written here)."""
    with safe_open(path, framework="pt") as f:
        meta = f.metadata()
        tensors = {name: f.get_tensor(name) for name in f.keys()}
    save_file(tensors, path, metadata=meta | {"key": meta["key"].replace('"seed": 0', '"seed": 9')})


@pytest.mark.parametrize("damage", [_flip_middle, _truncate, _wrong_key], ids=["flipped", "truncated", "wrong_key"])
def test_damaged_file_is_detected_deleted_and_refitted(tmp_path, monkeypatch, caplog, damage):
    reference = product_quantize(_weight(), cache_dir=tmp_path, **SETTINGS)
    [entry] = _entries(tmp_path)
    damage(entry)
    calls = _count_fits(monkeypatch)
    caplog.set_level(logging.WARNING, logger="asg.cache")

    refit = product_quantize(_weight(), cache_dir=tmp_path, **SETTINGS)

    assert len(calls) == 1
    assert f"PQ cache file {entry} is unreadable or corrupted" in caplog.text
    _assert_same(refit, reference)  # the fit is deterministic: the damaged copy was not used
    again = product_quantize(_weight(), cache_dir=tmp_path, **SETTINGS)
    assert len(calls) == 1  # the rewritten file is whole: a hit
    _assert_same(again, reference)


def _fit_in_child(cache_dir: str, start, results) -> None:
    start.wait()  # both processes reach the fit and the write together
    result = product_quantize(_weight(), cache_dir=cache_dir, **SETTINGS)
    # numpy, not torch: torch would share the tensors through the child's file descriptors, gone once it exits
    results.put((result.codes.numpy(), result.codebooks.numpy(), result.rel_error))


def test_two_processes_writing_the_same_key_leave_one_valid_file(tmp_path, monkeypatch):
    spawn = multiprocessing.get_context("spawn")
    start, results = spawn.Barrier(2), spawn.Queue()
    children = [spawn.Process(target=_fit_in_child, args=(str(tmp_path), start, results)) for _ in range(2)]
    for child in children:
        child.start()
    outputs = [results.get(timeout=300) for _ in children]
    for child in children:
        child.join(timeout=60)
        assert child.exitcode == 0

    reference = product_quantize(_weight(), **SETTINGS)
    for codes, codebooks, rel_error in outputs:
        assert torch.equal(torch.from_numpy(codes), reference.codes)
        assert torch.equal(torch.from_numpy(codebooks), reference.codebooks)
        assert rel_error == reference.rel_error
    [entry] = _entries(tmp_path)  # one file, no temporary left behind
    assert entry.suffix == ".safetensors"
    _forbid_fit(monkeypatch)
    _assert_same(product_quantize(_weight(), cache_dir=tmp_path, **SETTINGS), reference)


def test_entries_are_readable_by_others_under_the_umask(tmp_path, monkeypatch):
    """A cache dir shared by a cluster's users: entries follow the umask, not mkstemp's owner-only mode."""
    monkeypatch.setattr(asg.results, "_UMASK", 0o022)  # read once at import: setting the umask is process-wide
    product_quantize(_weight(), cache_dir=tmp_path, **SETTINGS)
    [entry] = _entries(tmp_path)
    assert stat.S_IMODE(entry.stat().st_mode) == 0o644
