"""The compiled kernels (asg/csrc): built here; the same codes as torch ops, the same lookup gradients as autograd."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

from asg import kernels, quantize
from asg.quantize import _nearest, _slack, product_quantize

SIZES = (2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64, 96)  # the sub-vector sizes the kernel serves


@pytest.fixture(scope="module")
def minilm_rows(minilm_dir) -> torch.Tensor:
    with safe_open(str(Path(minilm_dir) / "model.safetensors"), framework="pt") as f:
        return f.get_tensor("embeddings.word_embeddings.weight")[:5000].float().contiguous()


@pytest.fixture
def torch_only(monkeypatch):
    monkeypatch.setattr(quantize.kernels, "nearest", lambda x, centroids: None)


def test_kernel_builds_and_serves_its_sizes_here():
    # these machines have a compiler and AVX2: a build that broke would silently slow every fit
    ext = kernels.module()
    assert ext is not None
    assert [s for s in range(1, 129) if ext.supports(s)] == list(SIZES)


@pytest.mark.parametrize("s", SIZES)
def test_kernel_scores_match_torch(minilm_rows, s):
    x = minilm_rows[:, 5 : 5 + s]  # a strided view, as the encode step passes
    # 301 centroids: not a whole number of the kernel's 4-centroid steps, so its one-at-a-time tail runs too
    centroids = minilm_rows[torch.randperm(5000, generator=torch.Generator().manual_seed(s))[:301], :s]
    code, best, second = kernels.nearest(x, centroids)
    ref_code, ref_best, ref_second = quantize._scores_torch(x.contiguous(), centroids, None, None)
    slack = _slack(x.square().sum(-1), centroids)
    tol = 4 * slack  # the same scores up to float32 rounding
    assert ((best - ref_best).abs() <= tol).all() and ((second - ref_second).abs() <= tol).all()
    assert (code == ref_code).float().mean() > 0.999  # only near-ties may differ before the exact decision
    assert torch.equal(_nearest(x, centroids, slack)[0], _nearest(x.contiguous(), centroids, slack)[0])


@pytest.mark.parametrize("path", ["kernel", "torch"])
def test_ties_go_to_the_lowest_index(request, path):
    if path == "torch":
        request.getfixturevalue("torch_only")
    centroids = torch.tensor([[0.0, 0.0], [1.0, 0.0], [1.0, 0.0], [3.0, 0.0]])
    x = torch.tensor([[0.5, 0.0], [1.0, 0.0], [2.0, 0.0], [2.9, 0.1], [-1.0, 0.0]])
    codes, second = _nearest(x, centroids, _slack(x.square().sum(-1), centroids), chunk_size=2)
    assert codes.tolist() == [0, 1, 1, 3, 0]
    assert second[1] == -1.0  # ||c||^2 - 2 x.c of the duplicate centroid: the runner-up ties the best


@pytest.mark.parametrize(("m", "k"), [(32, 256), (64, 128), (96, 64)])
def test_fit_with_the_kernel_equals_the_torch_fit(minilm_rows, monkeypatch, m, k):
    options = dict(m=m, k=k, iters=10, seed=3, sample_rows=4000)  # k-means++ seeding, then every row encoded
    fast = product_quantize(minilm_rows, **options)
    monkeypatch.setattr(quantize.kernels, "nearest", lambda x, centroids: None)
    monkeypatch.setattr(quantize.kernels, "seed_steps", lambda *args: False)
    slow = product_quantize(minilm_rows, **options)
    assert torch.equal(fast.codes, slow.codes) and torch.equal(fast.codebooks, slow.codebooks)


@pytest.mark.parametrize("case", ["subsample", "weighted", "duplicates"])
def test_seeding_kernel_picks_the_rows_of_the_torch_loop(minilm_rows, monkeypatch, case):
    x = minilm_rows[:, 12:24].contiguous()
    w, k = None, 256  # 4,096 of the 5,000 rows seed, unweighted
    if case == "weighted":  # every weighted row seeds: weighted draws and potential
        x, k = x[:3000], 64
        w = torch.rand(3000, generator=torch.Generator().manual_seed(1)) * (torch.arange(3000) % 4 > 0)
    elif case == "duplicates":  # 10 distinct rows for 32 centroids: the mass runs out, draws turn uniform
        x, k = x[:10].repeat(20, 1), 32
    called = []
    monkeypatch.setattr(quantize, "_seed_steps_torch", lambda *args: called.append(args))
    fast = quantize._kmeans_pp(x, k, torch.Generator().manual_seed(7), w)
    assert not called  # the kernel served the steps
    monkeypatch.undo()
    monkeypatch.setattr(quantize.kernels, "seed_steps", lambda *args: False)
    assert torch.equal(fast, quantize._kmeans_pp(x, k, torch.Generator().manual_seed(7), w))
    assert len(fast.unique(dim=0)) == (10 if case == "duplicates" else k)


def test_without_the_kernel_the_fit_runs_on_torch(monkeypatch, caplog):
    monkeypatch.setattr(kernels, "_loaded", {})
    monkeypatch.setenv("ASG_KERNELS", "0")
    assert kernels.module() is None and kernels.nearest(torch.zeros(4, 12), torch.zeros(2, 12)) is None
    assert kernels.scatter(torch.zeros(4, 12), torch.zeros(4, 2, dtype=torch.long), 2) is None
    assert not kernels.seed_steps(*[torch.zeros(1)] * 3, None, torch.zeros(2, dtype=torch.long), 1, None)
    monkeypatch.setattr(kernels, "_loaded", {})
    monkeypatch.setenv("ASG_KERNELS", "1")
    monkeypatch.setattr(kernels, "SOURCES", {"kmeans": Path("/nonexistent/kmeans.cpp")})
    with caplog.at_level("WARNING"):
        assert kernels.module() is None
    assert "torch ops run instead" in caplog.text
    result = product_quantize(torch.randn(500, 24, generator=torch.Generator().manual_seed(0)), m=2, k=16)
    assert result.codes.shape == (500, 2)


@pytest.mark.parametrize("dtype", [torch.uint8, torch.int16, torch.int32, torch.int64])  # what codes are stored as
@pytest.mark.parametrize("s", [12, 5])  # a sub-vector length the gather's copy is compiled for, and one it is not
def test_lookup_kernels_equal_autograd_through_the_plain_gather(dtype, s):
    assert kernels.module("lookup") is not None  # built here: a broken build would silently slow every step
    gen = torch.Generator().manual_seed(0)
    m, k = 6, 64
    codes = torch.randint(0, k, (5000, m), generator=gen).to(dtype)  # ~470 rows added into each table row
    codebooks = torch.randn(m, k, s, generator=gen, requires_grad=True)
    grad = torch.randn(5000, m * s, generator=gen)
    flat = (codes.long() + torch.arange(m) * k).reshape(-1)
    plain = codebooks.reshape(m * k, s).index_select(0, flat).view(5000, m * s)
    plain.backward(grad)  # index_select's backward: index_add, in index order
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(2)  # where index_put_(accumulate=True) adds these rows in another order
        if sys.platform.startswith("linux"):  # built with OpenMP: the sub-spaces split over both threads
            assert kernels.module("lookup").parallel_chunks() == 2
        assert torch.equal(kernels.gather(codes, codebooks.detach()), plain.detach())
        assert torch.equal(kernels.scatter(grad, codes, k), codebooks.grad)  # bit for bit
    finally:
        torch.set_num_threads(threads)
    assert kernels.gather(codes, codebooks.detach().double()) is None  # not served: the caller runs torch
    assert kernels.scatter(grad.double(), codes, k) is None
    codes[3, 2] = k - 1  # out of range for the first k - 1 centroids
    with pytest.raises(RuntimeError, match="out of range"):
        kernels.gather(codes, codebooks.detach()[:, : k - 1].contiguous())
    with pytest.raises(RuntimeError, match="out of range"):
        kernels.scatter(grad, codes, k - 1)
    codes[3, 2] = -1  # checked before any add, in one pass over all codes (uint8 codes wrap to 255)
    with pytest.raises(RuntimeError, match="code (-1|255) is out of range"):
        kernels.scatter(grad, codes, k)


def _load_lookup(env: dict, **kwargs) -> subprocess.Popen | subprocess.CompletedProcess:
    code = "from asg import kernels; lib = kernels.module('lookup'); print(lib.__file__ if lib else 'not built')"
    args = [sys.executable, "-c", code]
    if kwargs.pop("background", False):
        return subprocess.Popen(args, env=env, start_new_session=True, stdout=subprocess.DEVNULL, **kwargs)
    return subprocess.run(args, env=env, capture_output=True, text=True, check=True, **kwargs)


def test_a_build_killed_midway_blocks_no_later_process(tmp_path):
    # a preempted job or a timed-out CI run kills a build; torch's shared build folder then keeps a lock that
    # every later process waits on forever, so the next process must neither wait nor see a half-built library
    env = os.environ | {"TORCH_EXTENSIONS_DIR": str(tmp_path), "ASG_KERNELS": "1"}
    first = _load_lookup(env, background=True)
    deadline = time.monotonic() + 120
    while not list(tmp_path.rglob("build.ninja")) and first.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    assert first.poll() is None, "the first build ended before it could be killed mid-way"
    os.killpg(first.pid, signal.SIGKILL)  # the compiler too
    first.wait()
    built = _load_lookup(env, timeout=600).stdout.strip()
    assert Path(built).parent.parent == tmp_path / "asg"  # loaded from the build it made itself
    (library,) = (tmp_path / "asg").glob("asg_lookup_*.so")  # published whole, in the shared cache
    assert _load_lookup(env, timeout=120).stdout.strip() == str(library)  # later processes import it, no build
