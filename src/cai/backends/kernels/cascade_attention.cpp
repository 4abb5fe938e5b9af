// Decode attention over vLLM's CPU KV cache (its "vec" layout, float32) with shared blocks read once.
//
// vLLM's CPU kernel reads each request's whole context for that request alone. When requests share
// KV blocks (the K samples of a prompt, or a few-shot prefix common to a batch, through vLLM's
// prefix cache) each shared block is read here once per segment for all the query heads of all the
// requests that share it, with each query row's softmax kept online (running max, sum and weighted
// values, as in FlashAttention, Dao et al. 2022), so the order in which a row meets its blocks does
// not matter. The segments (rows that share a run of blocks) come from Python, once per step. The
// blocks that every row shares can be done in Python first, as matrix products (faster there); the
// kernel then starts each row from that state (init_max, init_sum, init_acc) instead of from nothing.
//
// Cache layout (vLLM's cpu_attn_reshape_and_cache, isa "vec", float32 or bf16 alike):
// kv_cache[block][kv_head] holds the block's keys transposed, [head_dim][block_size], then its values,
// [block_size][head_dim]. A bf16 cache's block is widened to float32 once per segment, for all the
// segment's rows; scores, softmax and sums are float32 in both, and a bf16 output is rounded once.
#include <torch/extension.h>
#include <ATen/Parallel.h>
#include <algorithm>
#include <cstdint>
#include <cstring>
#include <type_traits>
#include <vector>

namespace {

constexpr int BS = 32;          // tokens a block
constexpr int MAXG = 8;         // query heads a KV head, at most
constexpr float NEG = -1e30f;   // a finite "minus infinity": the build uses -ffast-math

// exp(x) for a block's 32 scores, vectorised by the compiler: 2^(x log2 e) split into 2^n 2^f, with
// 2^f from a degree-6 polynomial on [0, 1) (relative error about 2e-7); x below -87 gives 0.
inline void exp_block(float* x, int n) {
  for (int j = 0; j < n; ++j) {
    float y = std::max(x[j], -87.0f) * 1.4426950408889634f;
    float fl = __builtin_floorf(y);
    float f = y - fl;
    float p = 1.5353362e-4f;
    p = p * f + 1.3398874e-3f;
    p = p * f + 9.6181291e-3f;
    p = p * f + 5.5504109e-2f;
    p = p * f + 2.4022650e-1f;
    p = p * f + 6.9314718e-1f;
    p = p * f + 1.0f;
    int32_t bits = (static_cast<int32_t>(fl) + 127) << 23;
    float scale;
    std::memcpy(&scale, &bits, sizeof(float));
    x[j] = x[j] < -87.0f ? 0.0f : p * scale;
  }
}

typedef float v8 __attribute__((vector_size(32)));
typedef float v8u __attribute__((vector_size(32), aligned(4)));  // unaligned loads and stores

inline v8 load(const float* p) { return *reinterpret_cast<const v8u*>(p); }
inline void store(float* p, v8 x) { *reinterpret_cast<v8u*>(p) = x; }
inline v8 splat(float x) { return v8{x, x, x, x, x, x, x, x}; }

// One row's G query heads (scaled, side by side in q) against one block: scores, then each head's
// running max, sum and weighted values (acc, G x D) updated online.
template <int G, int D>
inline void attend_block(const float* q, const float* kt, const float* v, int valid, float* run_max,
                         float* run_sum, float* acc) {
  v8 s[G][BS / 8];
  for (int g = 0; g < G; ++g)
    for (int c = 0; c < BS / 8; ++c) s[g][c] = splat(0.0f);
  for (int d = 0; d < D; ++d) {
    v8 k[BS / 8];
    for (int c = 0; c < BS / 8; ++c) k[c] = load(kt + d * BS + c * 8);
    for (int g = 0; g < G; ++g) {
      const v8 qd = splat(q[g * D + d]);
      for (int c = 0; c < BS / 8; ++c) s[g][c] += qd * k[c];
    }
  }
  for (int g = 0; g < G; ++g) {
    float p[BS];
    for (int c = 0; c < BS / 8; ++c) store(p + c * 8, s[g][c]);
    for (int j = valid; j < BS; ++j) p[j] = NEG;
    float mx = run_max[g];
    for (int j = 0; j < BS; ++j) mx = std::max(mx, p[j]);
    float corr = run_max[g] - mx;
    exp_block(&corr, 1);
    for (int j = 0; j < BS; ++j) p[j] -= mx;
    exp_block(p, BS);
    float total = 0.0f;
    for (int j = 0; j < BS; ++j) total += p[j];
    run_sum[g] = run_sum[g] * corr + total;
    run_max[g] = mx;
    v8 a[D / 8];
    const v8 cv = splat(corr);
    for (int c = 0; c < D / 8; ++c) a[c] = load(acc + g * D + c * 8) * cv;
    for (int j = 0; j < valid; ++j) {
      const v8 pj = splat(p[j]);
      for (int c = 0; c < D / 8; ++c) a[c] += pj * load(v + j * D + c * 8);
    }
    for (int c = 0; c < D / 8; ++c) store(acc + g * D + c * 8, a[c]);
  }
}

// One (block, KV head)'s keys and values as float32: in place for a float32 cache, else widened
// into scratch (2 x BS x D floats).
template <int D>
inline const float* block_f32(const float* kv, float*) { return kv; }
template <int D>
inline const float* block_f32(const at::BFloat16* kv, float* scratch) {
  for (int i = 0; i < 2 * BS * D; ++i) scratch[i] = static_cast<float>(kv[i]);
  return scratch;
}

}  // namespace


template <int G, int D, typename T>
void run(const torch::Tensor& query, const torch::Tensor& kv_cache, torch::Tensor& output,
         const torch::Tensor& block_table, const torch::Tensor& seq_lens, const torch::Tensor& rows,
         const torch::Tensor& tokens, const torch::Tensor& segments, float sc, const torch::Tensor& init_max,
         const torch::Tensor& init_sum, const torch::Tensor& init_acc) {
  const int64_t n_rows = rows.size(0), kv_heads = kv_cache.size(1);
  const T* q_base = query.data_ptr<T>();
  const int64_t q_tok = query.stride(0), q_head = query.stride(1);
  T* o_base = output.data_ptr<T>();
  const int64_t o_tok = output.stride(0), o_head = output.stride(1);
  const T* cache = kv_cache.data_ptr<T>();
  const int64_t per_head = 2 * BS * D, per_block = kv_heads * per_head;
  auto bt = block_table.accessor<int32_t, 2>();
  auto lens = seq_lens.accessor<int32_t, 1>();
  auto row_req = rows.accessor<int64_t, 1>();
  auto req_tok = tokens.accessor<int64_t, 1>();
  auto seg = segments.accessor<int64_t, 2>();
  const int64_t n_seg = segments.size(0);
  // A start state from Python (the blocks every row shares, done as matrix products there): each
  // row's running max, sum and unnormalised weighted values a KV head, [kv_heads][rows x G](x D).
  const bool init = init_max.numel() > 0;
  const float* im = init ? init_max.data_ptr<float>() : nullptr;
  const float* is = init ? init_sum.data_ptr<float>() : nullptr;
  const float* ia = init ? init_acc.data_ptr<float>() : nullptr;
  // Rows split into one contiguous chunk a thread; a segment across two chunks is read by both.
  const int64_t chunks = std::max<int64_t>(1, std::min<int64_t>(at::get_num_threads(), n_rows));

  at::parallel_for(0, chunks * kv_heads, 1, [&](int64_t begin, int64_t end) {
    // Widened blocks for a bf16 cache; a float32 one is read in place and needs none.
    std::vector<float> acc, run_max, run_sum, qs, scratch(std::is_same<T, float>::value ? 0 : 2 * BS * D);
    for (int64_t item = begin; item < end; ++item) {
      const int64_t c = item / kv_heads, h = item % kv_heads;
      const int64_t r0 = n_rows * c / chunks, r1 = n_rows * (c + 1) / chunks;
      const int64_t m = (r1 - r0) * G;
      if (init) {
        const int64_t at = h * n_rows * G + r0 * G;
        acc.assign(ia + at * D, ia + (at + m) * D);
        run_max.assign(im + at, im + at + m);
        run_sum.assign(is + at, is + at + m);
      } else {
        acc.assign(m * D, 0.0f);
        run_max.assign(m, NEG);
        run_sum.assign(m, 0.0f);
      }
      qs.resize(m * D);
      for (int64_t r = r0; r < r1; ++r)  // the chunk's queries, scaled, side by side
        for (int g = 0; g < G; ++g) {
          const T* src = q_base + req_tok[row_req[r]] * q_tok + (h * G + g) * q_head;
          float* dst = qs.data() + ((r - r0) * G + g) * D;
          for (int d = 0; d < D; ++d) dst[d] = static_cast<float>(src[d]) * sc;
        }
      for (int64_t s = 0; s < n_seg; ++s) {
        const int64_t a = std::max(seg[s][0], r0), b = std::min(seg[s][1], r1);
        if (a >= b) continue;
        const int64_t first = row_req[seg[s][0]];
        for (int64_t blk = seg[s][2]; blk < seg[s][3]; ++blk) {
          const int valid = static_cast<int>(std::min<int64_t>(BS, lens[first] - blk * BS));
          const float* kt =
              block_f32<D>(cache + static_cast<int64_t>(bt[first][blk]) * per_block + h * per_head, scratch.data());
          const float* v = kt + BS * D;
          for (int64_t r = a; r < b; ++r) {
            const int64_t i = (r - r0) * G;
            attend_block<G, D>(qs.data() + i * D, kt, v, valid, run_max.data() + i, run_sum.data() + i,
                               acc.data() + i * D);
          }
        }
      }
      for (int64_t r = r0; r < r1; ++r)
        for (int g = 0; g < G; ++g) {
          const int64_t i = (r - r0) * G + g;
          const float inv = 1.0f / run_sum[i];
          T* dst = o_base + req_tok[row_req[r]] * o_tok + (h * G + g) * o_head;
          // c10's conversion: bf16 rounded to nearest even, float32 as is.
          for (int d = 0; d < D; ++d) dst[d] = static_cast<T>(acc[i * D + d] * inv);
        }
    }
  });
}

// The (query heads a KV head, head size) pairs compiled here; others keep vLLM's kernel.
bool supported(int64_t group, int64_t dim) {
  return (dim == 64 || dim == 128) && (group == 1 || group == 2 || group == 3 || group == 4 || group == 8);
}

void cascade_attention(const torch::Tensor& query,        // [tokens, heads, dim] float32 or bf16
                       const torch::Tensor& kv_cache,     // [blocks, kv_heads, 2 * BS, dim], the same
                       torch::Tensor& output,             // [tokens, heads, dim], the same
                       const torch::Tensor& block_table,  // [requests, max_blocks] int32
                       const torch::Tensor& seq_lens,     // [requests] int32
                       const torch::Tensor& rows,         // [rows] int64: request at each sorted row
                       const torch::Tensor& tokens,       // [requests] int64: each request's query token
                       const torch::Tensor& segments,     // [segments, 4] int64: row start, end, block start, end
                       double scale,
                       const torch::Tensor& init_max,     // [kv_heads, rows x G] float32, or empty
                       const torch::Tensor& init_sum,     // [kv_heads, rows x G] float32, or empty
                       const torch::Tensor& init_acc) {   // [kv_heads, rows x G, dim] float32, or empty
  const auto type = query.scalar_type();
  TORCH_CHECK((type == torch::kFloat32 || type == torch::kBFloat16) && kv_cache.scalar_type() == type &&
              output.scalar_type() == type, "cascade attention takes float32 or bf16, the same for all three");
  TORCH_CHECK(kv_cache.is_contiguous() && kv_cache.size(2) == 2 * BS, "cascade attention needs blocks of 32 tokens");
  TORCH_CHECK(block_table.scalar_type() == torch::kInt32 && seq_lens.scalar_type() == torch::kInt32);
  TORCH_CHECK(rows.scalar_type() == torch::kInt64 && segments.scalar_type() == torch::kInt64 &&
              tokens.scalar_type() == torch::kInt64);
  TORCH_CHECK(query.stride(2) == 1 && output.stride(2) == 1 && kv_cache.size(3) == query.size(2));
  const int64_t heads = query.size(1), dim = query.size(2), kv_heads = kv_cache.size(1);
  const int64_t group = heads / kv_heads;
  TORCH_CHECK(group * kv_heads == heads && supported(group, dim), "unsupported head layout");
  // Indices from Python, checked once a call: an index off the end would read or write past a tensor.
  TORCH_CHECK(rows.numel() == 0 || (rows.min().item<int64_t>() >= 0 && rows.max().item<int64_t>() < tokens.size(0) &&
              rows.max().item<int64_t>() < block_table.size(0) && rows.max().item<int64_t>() < seq_lens.size(0)),
              "cascade attention: a row's request is out of range");
  TORCH_CHECK(tokens.numel() == 0 || (tokens.min().item<int64_t>() >= 0 &&
              tokens.max().item<int64_t>() < std::min(query.size(0), output.size(0))),
              "cascade attention: a request's query token is out of range");
  if (init_max.numel() > 0) {
    const int64_t m = kv_heads * rows.size(0) * group;
    TORCH_CHECK(init_max.scalar_type() == torch::kFloat32 && init_sum.scalar_type() == torch::kFloat32 &&
                init_acc.scalar_type() == torch::kFloat32 && init_max.is_contiguous() && init_sum.is_contiguous() &&
                init_acc.is_contiguous() && init_max.numel() == m && init_sum.numel() == m &&
                init_acc.numel() == m * dim, "cascade attention: start state of the wrong shape");
  }
  const float sc = static_cast<float>(scale);
#define CAI_CASE(G, D)                                                                                     \
  if (group == G && dim == D) {                                                                            \
    if (type == torch::kBFloat16)                                                                          \
      return run<G, D, at::BFloat16>(query, kv_cache, output, block_table, seq_lens, rows, tokens, segments, \
                                     sc, init_max, init_sum, init_acc);                                     \
    return run<G, D, float>(query, kv_cache, output, block_table, seq_lens, rows, tokens, segments, sc,     \
                            init_max, init_sum, init_acc);                                                 \
  }
  CAI_CASE(1, 64) CAI_CASE(2, 64) CAI_CASE(3, 64) CAI_CASE(4, 64) CAI_CASE(8, 64)
  CAI_CASE(1, 128) CAI_CASE(2, 128) CAI_CASE(3, 128) CAI_CASE(4, 128) CAI_CASE(8, 128)
#undef CAI_CASE
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("cascade_attention", &cascade_attention, "decode attention with shared KV blocks read once");
  m.def("supported", &supported, "whether a (query heads a KV head, head size) pair is compiled");
}
