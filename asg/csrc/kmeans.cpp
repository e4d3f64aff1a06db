// Nearest-centroid search for k-means in small sub-spaces (asg/kernels.py builds this on first use).
//
// For rows x (n, s) and centroids c (k, s) it returns, per row, the index of the best score ||c||^2 - 2 x.c
// (the lowest index on equal scores), that score and the runner-up score, without the (n, k) score matrix that
// the torch path writes: each SIMD lane holds one row and walks all k centroids (several per step), so s
// multiply-adds per (row, centroid) are all it costs. Rows whose two scores are close are decided again in float64
// by the caller, so the codes do not depend on the summation order here.
#include <torch/extension.h>

#include <cstdint>
#include <limits>
#include <string>
#include <type_traits>

namespace {

#if defined(__x86_64__) || defined(__i386__)
#define ASG_X86 1

template <int W>
struct Lanes;  // W float lanes of one SIMD register
template <>
struct Lanes<16> {
  typedef float F __attribute__((vector_size(64)));
  typedef int32_t I __attribute__((vector_size(64)));
};
template <>
struct Lanes<8> {
  typedef float F __attribute__((vector_size(32)));
  typedef int32_t I __attribute__((vector_size(32)));
};

constexpr int kTile = 2;  // registers of rows per tile: enough independent multiply-adds to fill the pipeline
// Centroids scored per step: with C of them, each row register loaded from the tile serves C multiply-adds.
// Small sub-vectors keep the whole tile in registers, so one centroid a step leaves none to spare.
constexpr int centroids_per_step(int s) { return s >= 16 ? 4 : 1; }

template <int S, int W>
inline __attribute__((always_inline)) void assign_rows(const float* x, int64_t stride, int64_t n, const float* c,
                                                       const float* c_sq, int64_t k, int64_t* code, float* best,
                                                       float* second) {
  using F = typename Lanes<W>::F;
  using I = typename Lanes<W>::I;
  constexpr int C = centroids_per_step(S);
  const float inf = std::numeric_limits<float>::infinity();
  for (int64_t i0 = 0; i0 < n; i0 += kTile * W) {
    F xt[S][kTile];  // -2 x, transposed: lane l of xt[d][t] is row i0 + t * W + l
    for (int t = 0; t < kTile; ++t) {
      for (int l = 0; l < W; ++l) {
        const int64_t row = i0 + t * W + l;
        for (int d = 0; d < S; ++d) xt[d][t][l] = row < n ? -2.0f * x[row * stride + d] : 0.0f;
      }
    }
    F b1[kTile], b2[kTile];
    I i1[kTile];
    for (int t = 0; t < kTile; ++t) {
      b1[t] = b2[t] = F{} + inf;
      i1[t] = I{};
    }
    // scores of centroids j0 .. j0 + B - 1, each summed over d in the same order whatever B is
    auto step = [&](int64_t j0, auto block) {
      constexpr int B = decltype(block)::value;
      F acc[B][kTile];
      for (int b = 0; b < B; ++b) {
        for (int t = 0; t < kTile; ++t) acc[b][t] = F{} + c_sq[j0 + b];
      }
      const float* cj = c + j0 * S;
      for (int d = 0; d < S; ++d) {
        for (int b = 0; b < B; ++b) {
          const float cd = cj[b * S + d];
          for (int t = 0; t < kTile; ++t) acc[b][t] += xt[d][t] * cd;
        }
      }
      for (int b = 0; b < B; ++b) {  // in index order: an equal later score keeps the earlier index
        const I jv = I{} + static_cast<int32_t>(j0 + b);
        for (int t = 0; t < kTile; ++t) {
          const auto lower = acc[b][t] < b1[t];
          const F passed = acc[b][t] > b1[t] ? acc[b][t] : b1[t];  // the larger of the new score and the old best
          b2[t] = passed < b2[t] ? passed : b2[t];
          i1[t] = lower ? jv : i1[t];
          b1[t] = lower ? acc[b][t] : b1[t];
        }
      }
    };
    int64_t j = 0;
    for (; j + C <= k; j += C) step(j, std::integral_constant<int, C>{});
    for (; j < k; ++j) step(j, std::integral_constant<int, 1>{});
    for (int t = 0; t < kTile; ++t) {
      for (int l = 0; l < W; ++l) {
        const int64_t row = i0 + t * W + l;
        if (row < n) {
          code[row] = i1[t][l];
          best[row] = b1[t][l];
          second[row] = b2[t][l];
        }
      }
    }
  }
}

template <int S>
__attribute__((target("avx512f"))) void assign_avx512(const float* x, int64_t stride, int64_t n, const float* c,
                                                      const float* c_sq, int64_t k, int64_t* code, float* best,
                                                      float* second) {
  assign_rows<S, 16>(x, stride, n, c, c_sq, k, code, best, second);
}

template <int S>
__attribute__((target("avx2,fma"))) void assign_avx2(const float* x, int64_t stride, int64_t n, const float* c,
                                                     const float* c_sq, int64_t k, int64_t* code, float* best,
                                                     float* second) {
  assign_rows<S, 8>(x, stride, n, c, c_sq, k, code, best, second);
}

using Assign = void (*)(const float*, int64_t, int64_t, const float*, const float*, int64_t, int64_t*, float*,
                        float*);

std::string isa() {
  if (__builtin_cpu_supports("avx512f")) return "avx512f";
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return "avx2";
  return "none";
}

// Sub-vector sizes with a kernel (the d / m of the configs' models, d = 384 or 768). In ad-hoc timings per call at
// k = 1024 it took 0.38x the torch path's time at 48 floats and 0.52x at 96 with AVX-512, 0.63x and 0.91x with AVX2.
template <int S>
Assign pick() {
  const std::string level = isa();
  return level == "avx512f" ? assign_avx512<S> : level == "avx2" ? assign_avx2<S> : nullptr;
}

Assign assign_for(int64_t s) {
  switch (s) {
    case 2: return pick<2>();
    case 3: return pick<3>();
    case 4: return pick<4>();
    case 6: return pick<6>();
    case 8: return pick<8>();
    case 12: return pick<12>();
    case 16: return pick<16>();
    case 24: return pick<24>();
    case 32: return pick<32>();
    case 48: return pick<48>();
    case 64: return pick<64>();
    case 96: return pick<96>();
    default: return nullptr;
  }
}
#else
using Assign = void*;
Assign assign_for(int64_t) { return nullptr; }
std::string isa() { return "none"; }
#endif

bool supports(int64_t s) { return assign_for(s) != nullptr; }

std::vector<torch::Tensor> nearest(const torch::Tensor& x, const torch::Tensor& centroids) {
  TORCH_CHECK(x.device().is_cpu() && x.scalar_type() == torch::kFloat32 && x.dim() == 2 && x.stride(1) == 1,
              "x must be a (n, s) float32 CPU tensor with contiguous rows");
  const int64_t n = x.size(0), s = x.size(1), k = centroids.size(0);
  TORCH_CHECK(centroids.sizes() == torch::IntArrayRef({k, s}) && centroids.scalar_type() == torch::kFloat32,
              "centroids must be (k, s) float32");
  TORCH_CHECK(k < (int64_t{1} << 31), "k must fit in int32");
  const auto assign = assign_for(s);
  TORCH_CHECK(assign != nullptr, "no kernel for sub-vectors of ", s, " floats on this CPU");
  const auto c = centroids.contiguous();
  const auto c_sq = c.square().sum(1).contiguous();
  auto code = torch::empty({n}, x.options().dtype(torch::kInt64));
  auto best = torch::empty({n}, x.options());
  auto second = torch::empty({n}, x.options());
#ifdef ASG_X86
  {
    pybind11::gil_scoped_release free_gil;  // the sub-spaces run in Python threads side by side
    assign(x.data_ptr<float>(), x.stride(0), n, c.data_ptr<float>(), c_sq.data_ptr<float>(), k,
           code.data_ptr<int64_t>(), best.data_ptr<float>(), second.data_ptr<float>());
  }
#endif
  return {code, best, second};
}

// The steps 1..k-1 of asg.quantize's greedy k-means++ seeding, the same ATen arithmetic as its torch loop
// (`_seed_steps_torch`), so the picked rows are the same bit for bit. Called from C++ they hold no GIL: on 2 threads
// the Python loop's ~15 calls a step made two sub-spaces seed in 1.5x one's time, this in ~1.05x (MiniLM, k=1024).
void seed_steps(const torch::Tensor& weights, const torch::Tensor& rows, torch::Tensor min_d,
                const c10::optional<torch::Tensor>& w, torch::Tensor chosen, int64_t trials,
                c10::optional<at::Generator> gen) {
  TORCH_CHECK(chosen.device().is_cpu() && chosen.scalar_type() == torch::kInt64 && chosen.is_contiguous(),
              "chosen must be a contiguous int64 CPU tensor");
  pybind11::gil_scoped_release free_gil;
  const int64_t n = min_d.size(0), k = chosen.size(0);
  auto cdf = torch::empty_like(min_d);
  auto d = torch::empty({trials, n}, min_d.options());
  auto potential = torch::empty({trials}, min_d.options());
  int64_t* picked = chosen.data_ptr<int64_t>();
  for (int64_t i = 1; i < k; ++i) {
    const double total = at::cumsum_out(cdf, w ? min_d * *w : min_d, 0)[n - 1].item<double>();
    torch::Tensor cand;
    if (total > 0) {
      cand = at::searchsorted(cdf, at::rand({trials}, gen, min_d.options()).mul_(total), false, true).clamp_max_(n - 1);
    } else {
      cand = at::randint(n, {trials}, gen, min_d.options().dtype(torch::kInt64));
    }
    at::minimum_out(d, at::mm_out(d, weights.index_select(0, cand), rows), min_d);
    const int64_t best = (w ? at::mv(d, *w) : at::sum_out(potential, d, 1)).argmin().item<int64_t>();
    min_d = d.select(0, best).clamp_min(0);
    picked[i] = cand[best].item<int64_t>();
  }
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, module) {
  module.def("supports", &supports, "whether sub-vectors of s floats have a kernel on this CPU");
  module.def("isa", &isa, "the instruction set the kernels run with on this CPU (none: they do not run)");
  module.def("seed_steps", &seed_steps, "k-means++ seeding's steps after the first, into chosen");
  module.def("nearest", &nearest, "codes, best and runner-up scores ||c||^2 - 2 x.c of rows x against centroids");
}
