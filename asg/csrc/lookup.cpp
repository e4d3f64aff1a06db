// ASG's codebook lookup on CPU, forward and backward, straight from the (n, m) codes of the looked-up tokens.
//
// Forward: out[i] = codebooks[0, codes[i, 0]] ++ ... ++ codebooks[m - 1, codes[i, m - 1]], one copy per
// sub-vector, with no flat (n * m) index built first.
// Backward: grad_table[j, codes[i, j]] += grad[i, j] in increasing i for each table row: the order of autograd's
// index_add over the flat gather (index_select's backward), so the sums are the same bit for bit. Sub-spaces own
// disjoint table rows, so threads split the sub-spaces and the order per row, hence the result, never changes.

#include <ATen/Parallel.h>
#include <torch/extension.h>

#include <algorithm>
#include <atomic>

namespace {

void check(const torch::Tensor& codes, const torch::Tensor& table, int64_t m) {
  TORCH_CHECK(codes.device().is_cpu() && codes.dim() == 2 && codes.is_contiguous() && codes.size(1) == m &&
                  !codes.is_floating_point(),
              "codes must be a contiguous (n, m) integer CPU tensor");
  TORCH_CHECK(table.scalar_type() == torch::kFloat32 && table.is_contiguous() && table.device().is_cpu(),
              "the codebooks and gradients must be contiguous float32 CPU tensors");
}

// One sub-vector's copy. S > 0 fixes its length at compile time, so the loop becomes a few vector moves (a memcpy
// call per 48-byte sub-vector cost 1.5x the time); S == 0 reads it from s. The backward's addition stays a runtime
// loop: fixing its length made it 2x slower.
template <int S>
inline void copy_row(float* __restrict__ dst, const float* __restrict__ src, int64_t s) {
  const int64_t len = S > 0 ? S : s;
  for (int64_t e = 0; e < len; ++e) dst[e] = src[e];
}

// One vectorisable pass over all codes before gather's copies or scatter's adds: a check per code inside their loops
// cost ~25% of the backward in scratch timings. The extremes stay in code_t: widened to int64 per code, the pass did
// not vectorise and cost ~0.12 ms of the e5 benchmark's backward, against ~0.01 ms.
template <typename code_t>
void check_range(const code_t* codes, int64_t count, int64_t k) {
  code_t low = 0, high = 0;
  for (int64_t i = 0; i < count; ++i) {
    low = std::min(low, codes[i]);
    high = std::max(high, codes[i]);
  }
  const int64_t bad = low < 0 ? low : high;
  TORCH_CHECK(low >= 0 && static_cast<int64_t>(high) < k, "code ", bad, " is out of range for codebooks of ", k,
              " centroids");
}

template <int S, typename code_t>
void gather_rows(const code_t* codes, const float* books, float* out, int64_t n, int64_t m, int64_t k, int64_t s) {
  at::parallel_for(0, n, 256, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      for (int64_t j = 0; j < m; ++j) {
        const int64_t c = static_cast<int64_t>(codes[i * m + j]);  // in range: gather checked them all first
        copy_row<S>(out + (i * m + j) * s, books + (j * k + c) * s, s);
      }
    }
  });
}

template <typename code_t>
void scatter_rows(const code_t* codes, const float* grad, float* table, int64_t n, int64_t m, int64_t k, int64_t s) {
  at::parallel_for(0, m, 1, [&](int64_t first, int64_t last) {
    for (int64_t i = 0; i < n; ++i) {
      for (int64_t j = first; j < last; ++j) {
        const int64_t c = static_cast<int64_t>(codes[i * m + j]);  // in range: scatter checked them all first
        float* __restrict__ dst = table + (j * k + c) * s;
        const float* __restrict__ row = grad + (i * m + j) * s;
        for (int64_t e = 0; e < s; ++e) dst[e] += row[e];
      }
    }
  });
}

// Runs body.template operator()<S>() with S = s for the sub-vector lengths the configs give (d = 384 or 768 split
// m ways), else S = 0.
template <typename Body>
void with_length(int64_t s, Body&& body) {
  switch (s) {
    case 4: return body.template operator()<4>();
    case 6: return body.template operator()<6>();
    case 8: return body.template operator()<8>();
    case 12: return body.template operator()<12>();
    case 16: return body.template operator()<16>();
    case 24: return body.template operator()<24>();
    case 32: return body.template operator()<32>();
    case 48: return body.template operator()<48>();
    case 96: return body.template operator()<96>();
    default: return body.template operator()<0>();
  }
}

torch::Tensor gather(const torch::Tensor& codes, const torch::Tensor& codebooks) {
  TORCH_CHECK(codebooks.dim() == 3, "codebooks must be (m, k, s)");
  const int64_t m = codebooks.size(0), k = codebooks.size(1), s = codebooks.size(2), n = codes.size(0);
  check(codes, codebooks, m);
  auto out = torch::empty({n, m * s}, codebooks.options());
  AT_DISPATCH_INTEGRAL_TYPES(codes.scalar_type(), "gather", [&] {
    check_range(codes.data_ptr<scalar_t>(), n * m, k);
    with_length(s, [&]<int S>() {
      gather_rows<S>(codes.data_ptr<scalar_t>(), codebooks.data_ptr<float>(), out.data_ptr<float>(), n, m, k, s);
    });
  });
  return out;
}

torch::Tensor scatter(const torch::Tensor& grad, const torch::Tensor& codes, int64_t k) {
  const int64_t n = codes.size(0), m = codes.dim() == 2 ? codes.size(1) : 0;
  check(codes, grad, m);
  TORCH_CHECK(grad.dim() == 2 && grad.size(0) == n && m > 0 && grad.size(1) % m == 0,
              "grad must be (n, m * s), one row per row of codes");
  const int64_t s = grad.size(1) / m;
  auto table = torch::zeros({m, k, s}, grad.options());
  AT_DISPATCH_INTEGRAL_TYPES(codes.scalar_type(), "scatter", [&] {
    check_range(codes.data_ptr<scalar_t>(), n * m, k);
    scatter_rows(codes.data_ptr<scalar_t>(), grad.data_ptr<float>(), table.data_ptr<float>(), n, m, k, s);
  });
  return table;
}

// Chunks one parallel region over at::get_num_threads() items runs in: 1 where the build has no OpenMP.
int64_t parallel_chunks() {
  std::atomic<int64_t> chunks{0};
  at::parallel_for(0, at::get_num_threads(), 1, [&](int64_t, int64_t) { ++chunks; });
  return chunks;
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, module) {
  module.def("gather", &gather, "(n, m * s) vectors of (n, m) codes from (m, k, s) codebooks");
  module.def("parallel_chunks", &parallel_chunks, "threads a parallel region gets (1 without OpenMP)");
  module.def("scatter", &scatter, "the (m, k, s) codebook gradient of gather, summed in autograd's order");
}
