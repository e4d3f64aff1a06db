// The backward of ASG's codebook lookup on CPU: the gradient of a row gather, scattered into a zeroed table.
//
// table_grad[index[i]] += grad[i] for i = 0, 1, ..., n - 1, one row at a time: the order of autograd's index_add
// (index_select's backward), so the sums are the same bit for bit. index_put_(accumulate=True) agrees on one
// thread only, and pays per-element index bookkeeping that dominates for PQ's few-float rows.

#include <torch/extension.h>

namespace {

torch::Tensor scatter_rows(const torch::Tensor& grad, const torch::Tensor& index, int64_t rows) {
  TORCH_CHECK(grad.device().is_cpu() && grad.scalar_type() == torch::kFloat32 && grad.dim() == 2 &&
                  grad.is_contiguous(),
              "grad must be a contiguous (n, s) float32 CPU tensor");
  TORCH_CHECK(index.scalar_type() == torch::kInt64 && index.dim() == 1 && index.is_contiguous() &&
                  index.size(0) == grad.size(0),
              "index must be a contiguous (n,) int64 tensor, one row of the table per row of grad");
  const int64_t n = grad.size(0), s = grad.size(1);
  auto out = torch::zeros({rows, s}, grad.options());
  const float* src = grad.data_ptr<float>();
  const int64_t* at = index.data_ptr<int64_t>();
  float* table = out.data_ptr<float>();
  for (int64_t i = 0; i < n; ++i) {
    TORCH_CHECK(at[i] >= 0 && at[i] < rows, "index ", at[i], " is out of range for a table of ", rows, " rows");
    float* dst = table + at[i] * s;
    const float* row = src + i * s;
    for (int64_t c = 0; c < s; ++c) dst[c] += row[c];
  }
  return out;
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, module) {
  module.def("scatter_rows", &scatter_rows, "a zeroed (rows, s) table with grad's rows added at index, in order");
}
