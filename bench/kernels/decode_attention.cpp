// Decode attention over vLLM's paged CPU KV cache, with each KV block read once for every
// sequence that shares it (cascade attention, as FlashInfer and Hydragen do on GPUs).
// A candidate that bench/decode_attention.py measures against vLLM's kernel; cai does not use
// it (bench/RESULTS.md, "Cascade decode attention against vLLM's CPU kernel", says why).
//
// Why: in best of K every sample of a prompt shares the prompt's KV blocks (vLLM's n and prefix
// caching point them at the same physical blocks), and in cai's revision requests all prompts
// share a long template. vLLM 0.32's CPU kernel attends sequence by sequence, so a shared block
// is loaded and multiplied against 3 query rows (one GQA group) at a time, at about 70 GFLOP/s
// on the 2-core AMD VM. Here the sequences are put in a prefix tree of their block tables; each
// node's blocks are multiplied against the query rows of every sequence below it, so the work
// per loaded block grows with the number of sharers and the inner loops keep their operands in
// registers. Partial results (max, sum, weighted values) are merged per row at the end, the
// flash-decoding merge (Dao et al. 2023, "Flash-Decoding for long-context inference").
//
// Layouts (checked against cpu_attn_reshape_and_cache with the "vec" ISA): kv_cache is
// [blocks, kv_heads, block_size, 2 * D]; per (block, head) the keys come first, transposed as
// [D][block_size], then the values as [block_size][D]. Scores, softmax and sums are fp32; the
// probabilities are rounded to bf16 for the second product, and the output to bf16.
#ifndef __AVX512BF16__
#error "decode_attention.cpp needs AVX-512 BF16 (compile with -march=native on such a CPU)"
#endif
#include <torch/extension.h>
#include <ATen/Parallel.h>
#include <immintrin.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <vector>

namespace {

constexpr float kNegInf = -std::numeric_limits<float>::infinity();

// exp for x <= 0 (softmax after the max is subtracted): Cody-Waite reduction to r in
// [-ln2/2, ln2/2], a degree-6 Taylor polynomial (error below 2e-7 relative), then 2^n by scalef.
inline __m512 exp_ps(__m512 x) {
  x = _mm512_max_ps(x, _mm512_set1_ps(-87.0f));
  const __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)),
                                        _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693359375f), x);
  r = _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.12194440e-4f), r);
  __m512 p = _mm512_set1_ps(1.0f / 720);
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 120));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 24));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 6));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(0.5f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
  return _mm512_scalef_ps(p, n);
}

// A node of the prefix tree: the sequences order[lo..hi) all use the physical blocks
// [b0, b1) of their block tables, which are the same blocks for each of them.
struct Node {
  int lo, hi, b0, b1;
};

// A unit of work: one node, one KV head, a run of the node's blocks and a run of its sequences.
struct Item {
  int node, head, b0, b1, s0, s1;
  int64_t out;  // offset of its partial results, (D + 2) floats per query row
};

struct Tree {
  const int32_t* table;
  int64_t stride;
  const int32_t* lens;
  int block_size;
  std::vector<int> order;
  std::vector<Node> nodes;

  int blocks_of(int s) const { return (lens[s] + block_size - 1) / block_size; }
  int block(int s, int b) const { return table[s * stride + b]; }

  void build(int lo, int hi, int depth) {
    if (hi - lo == 1) {
      const int s = order[lo];
      if (depth < blocks_of(s)) nodes.push_back({lo, hi, depth, blocks_of(s)});
      return;
    }
    // In lexicographic order the first and last rows' common prefix is the whole range's.
    // A shared block must be full for every sequence: only full blocks are shared, but a
    // sequence may end exactly where its blocks end, so bound by each one's full blocks.
    int full = std::numeric_limits<int>::max();
    for (int i = lo; i < hi; ++i) full = std::min(full, lens[order[i]] / block_size);
    const int a = order[lo], z = order[hi - 1];
    int k = depth;
    while (k < full && block(a, k) == block(z, k)) ++k;
    if (k > depth) nodes.push_back({lo, hi, depth, k});
    int i = lo;
    while (i < hi) {
      const int s = order[i];
      if (blocks_of(s) <= k) { ++i; continue; }  // all of its blocks are attended above
      // A partly filled block belongs to one sequence only, so it goes to a leaf of its own.
      const bool full_k = (k + 1) * block_size <= lens[s];
      int j = i + 1;
      while (full_k && j < hi && (k + 1) * block_size <= lens[order[j]] && block(order[j], k) == block(s, k)) ++j;
      build(i, j, k);
      i = j;
    }
  }
};

// Pairs of bf16 rows a, b (32 values each) interleaved as (a[j], b[j]) 32-bit words, the operand
// layout of vdpbf16ps: lo holds j = 0..15, hi j = 16..31.
struct Interleave {
  const __m512i idx_lo = _mm512_set_epi16(47, 15, 46, 14, 45, 13, 44, 12, 43, 11, 42, 10, 41, 9, 40, 8,
                                          39, 7, 38, 6, 37, 5, 36, 4, 35, 3, 34, 2, 33, 1, 32, 0);
  const __m512i idx_hi = _mm512_add_epi16(idx_lo, _mm512_set1_epi16(16));
  void operator()(__m512i a, __m512i b, __m512i& lo, __m512i& hi) const {
    lo = _mm512_permutex2var_epi16(a, idx_lo, b);
    hi = _mm512_permutex2var_epi16(a, idx_hi, b);
  }
};

inline __m512bh as_bh(__m512i x) { return (__m512bh)x; }

template <int D>
struct Kernel {
  static constexpr int V = D / 16;  // fp32 vectors per row
  static constexpr int P = D / 2;   // bf16 pairs per row
  const at::BFloat16* q;            // [S, H, D]
  const at::BFloat16* kv;           // [blocks, kv_heads, bs, 2D]
  int64_t q_seq, q_head;            // strides of q
  int64_t kv_block, kv_head;        // strides of kv_cache
  int group, bs;
  float scale;
  const Tree* tree;

  // Attend the query rows of sequences order[s0..s1) (all G heads of `head`) to blocks
  // [b0, b1), writing each row's max, sum and unnormalised output to `out`.
  //
  // Both products run as bf16 dot products with fp32 sums (vdpbf16ps, twice the fp32 FMA rate):
  // q.k is exact to fp32 rounding, since queries and keys are bf16 already; the probabilities are
  // rounded to bf16 before they weight the values, as FlashAttention-2 does (Dao 2023).
  void run(const Item& it, float* out) const {
    const Node& node = tree->nodes[it.node];
    const int rows = (it.s1 - it.s0) * group;
    thread_local std::vector<float> buf;  // items run thousands of times a step: no allocation each
    buf.resize(std::max(buf.size(), static_cast<size_t>(rows) * (D + P + 18) + D * bs + 64));
    float* acc = reinterpret_cast<float*>((reinterpret_cast<uintptr_t>(buf.data()) + 63) & ~uintptr_t(63));
    float* sums = acc + rows * D;                              // running sums, 16 lanes a row
    uint32_t* qw = reinterpret_cast<uint32_t*>(sums + rows * 16);  // query rows as bf16 pairs
    uint32_t* kp = qw + rows * P;  // keys as [D/2][bs] pairs along D
    uint32_t* vp = kp + P * bs;    // values as [bs/2][D] pairs along the keys
    float* mx = reinterpret_cast<float*>(vp + bs / 2 * D);
    for (int r = 0; r < rows; ++r) {
      const int s = tree->order[node.lo + it.s0 + r / group];
      const at::BFloat16* src = q + s * q_seq + (it.head * group + r % group) * q_head;
      std::memcpy(qw + r * P, src, D * sizeof(at::BFloat16));
      for (int v = 0; v < V; ++v) _mm512_store_ps(acc + r * D + 16 * v, _mm512_setzero_ps());
      _mm512_store_ps(sums + r * 16, _mm512_setzero_ps());
      mx[r] = kNegInf;
    }
    // A leaf is one sequence, whose last block may be partly filled.
    const int first = tree->order[node.lo + it.s0];
    const int len = tree->lens[first];
    for (int b = it.b0; b < it.b1; ++b) {
      const at::BFloat16* blk = kv + static_cast<int64_t>(tree->block(first, b)) * kv_block + it.head * kv_head;
      const int valid = std::min(bs, len - b * bs);
      // The next block is asked for while this one is packed, a few cache lines per step: the
      // cache is far larger than L3, and all at once the requests stall on the miss queue.
      const char* next = b + 1 < it.b1 ? reinterpret_cast<const char*>(
          kv + static_cast<int64_t>(tree->block(first, b + 1)) * kv_block + it.head * kv_head) : nullptr;
      pack_keys(blk, kp, next);
      pack_values(blk + D * bs, vp, valid, next ? next + D * bs * sizeof(at::BFloat16) : nullptr);
      int r = 0;
      for (; r + 4 <= rows; r += 4) tile<4>(r, qw, kp, vp, acc, sums, mx, valid);
      switch (rows - r) {
        case 3: tile<3>(r, qw, kp, vp, acc, sums, mx, valid); break;
        case 2: tile<2>(r, qw, kp, vp, acc, sums, mx, valid); break;
        case 1: tile<1>(r, qw, kp, vp, acc, sums, mx, valid); break;
        default: break;
      }
    }
    for (int r = 0; r < rows; ++r) {
      float* o = out + static_cast<int64_t>(r) * (D + 2);
      o[0] = mx[r];
      o[1] = _mm512_reduce_add_ps(_mm512_load_ps(sums + r * 16));
      std::copy(acc + r * D, acc + (r + 1) * D, o + 2);
    }
  }

  static __mmask16 live(int left) { return left >= 16 ? 0xFFFF : (left <= 0 ? 0 : (1u << left) - 1); }

  // Keys arrive as [D][bs]; rows d and d+1 interleave into [D/2][bs] words.
  void pack_keys(const at::BFloat16* k, uint32_t* kp, const char* next) const {
    const Interleave interleave;
    for (int p = 0; p < P; ++p)
      for (int j = 0; j < bs; j += 32) {
        if (next) {  // the two rows this step reads, 64 bytes each at bs = 32, in the next block
          _mm_prefetch(next + (2 * p * bs + j) * 2, _MM_HINT_T0);
          _mm_prefetch(next + ((2 * p + 1) * bs + j) * 2, _MM_HINT_T0);
        }
        __m512i lo, hi;
        interleave(_mm512_loadu_si512(k + 2 * p * bs + j), _mm512_loadu_si512(k + (2 * p + 1) * bs + j), lo, hi);
        _mm512_store_si512(kp + p * bs + j, lo);
        _mm512_store_si512(kp + p * bs + j + 16, hi);
      }
  }

  // Values arrive as [bs][D]; rows k and k+1 interleave into [bs/2][D] words. Rows past the
  // sequence's end are zeroed: the cache there is unwritten, and 0 x NaN would poison the sums.
  void pack_values(const at::BFloat16* v, uint32_t* vp, int valid, const char* next) const {
    const Interleave interleave;
    for (int k = 0; k < bs; k += 2)
      for (int d = 0; d < D; d += 32) {
        if (next) {
          _mm_prefetch(next + (k * D + d) * 2, _MM_HINT_T0);
          _mm_prefetch(next + ((k + 1) * D + d) * 2, _MM_HINT_T0);
        }
        const __m512i a = k < valid ? _mm512_loadu_si512(v + k * D + d) : _mm512_setzero_si512();
        const __m512i b = k + 1 < valid ? _mm512_loadu_si512(v + (k + 1) * D + d) : _mm512_setzero_si512();
        __m512i lo, hi;
        interleave(a, b, lo, hi);
        _mm512_store_si512(vp + k / 2 * D + d, lo);
        _mm512_store_si512(vp + k / 2 * D + d + 16, hi);
      }
  }

  // Rows r .. r+N of one block, 32 keys at a time: scores, the online softmax step, then the
  // weighted values, so that each chunk's probabilities are taken against the max its sums are
  // kept at. N rows at a time so each key and value vector is loaded once for all of them, and N
  // independent sums hide the dot product's latency.
  template <int N>
  void tile(int r, const uint32_t* qw, const uint32_t* kp, const uint32_t* vp, float* acc, float* sums, float* mx,
            int valid) const {
    alignas(64) uint32_t pw[N][16];  // each row's probabilities as bf16 pairs (k, k+1)
    const __m512 sc = _mm512_set1_ps(scale);
    for (int k0 = 0; k0 < bs && k0 < valid; k0 += 32) {
      __m512 a[N][2];
      for (int i = 0; i < N; ++i) a[i][0] = a[i][1] = _mm512_setzero_ps();
      for (int p = 0; p < P; ++p) {
        const __m512bh k_lo = as_bh(_mm512_load_si512(kp + p * bs + k0));
        const __m512bh k_hi = as_bh(_mm512_load_si512(kp + p * bs + k0 + 16));
        for (int i = 0; i < N; ++i) {
          const __m512bh qp = as_bh(_mm512_set1_epi32(static_cast<int>(qw[(r + i) * P + p])));
          a[i][0] = _mm512_dpbf16_ps(a[i][0], qp, k_lo);
          a[i][1] = _mm512_dpbf16_ps(a[i][1], qp, k_hi);
        }
      }
      const __mmask16 m0 = live(valid - k0), m1 = live(valid - k0 - 16);
      for (int i = 0; i < N; ++i) {
        const __m512 lo = _mm512_mask_mul_ps(_mm512_set1_ps(kNegInf), m0, a[i][0], sc);
        const __m512 hi = _mm512_mask_mul_ps(_mm512_set1_ps(kNegInf), m1, a[i][1], sc);
        // Online softmax (Milakov & Gimelshein 2018): when a row's max grows, its running sum and
        // output are rescaled by exp(old max - new max); blocks after the first rarely move it.
        const float top = _mm512_reduce_max_ps(_mm512_max_ps(lo, hi));
        float* row_acc = acc + (r + i) * D;
        if (top > mx[r + i]) {
          const __m512 alpha = _mm512_set1_ps(std::exp(mx[r + i] - top));  // 0 on the first block
          for (int v = 0; v < V; ++v) _mm512_store_ps(row_acc + 16 * v, _mm512_mul_ps(alpha, _mm512_load_ps(row_acc + 16 * v)));
          _mm512_store_ps(sums + (r + i) * 16, _mm512_mul_ps(alpha, _mm512_load_ps(sums + (r + i) * 16)));
          mx[r + i] = top;
        }
        const __m512 m = _mm512_set1_ps(mx[r + i]);
        const __m512 p_lo = _mm512_maskz_mov_ps(m0, exp_ps(_mm512_sub_ps(lo, m)));
        const __m512 p_hi = _mm512_maskz_mov_ps(m1, exp_ps(_mm512_sub_ps(hi, m)));
        _mm512_store_ps(sums + (r + i) * 16, _mm512_add_ps(_mm512_load_ps(sums + (r + i) * 16), _mm512_add_ps(p_lo, p_hi)));
        _mm512_store_si512(pw[i], (__m512i)_mm512_cvtne2ps_pbh(p_hi, p_lo));
      }
      __m512 w[N][V];
      for (int i = 0; i < N; ++i)
        for (int v = 0; v < V; ++v) w[i][v] = _mm512_load_ps(acc + (r + i) * D + 16 * v);
      const int pairs = (std::min(32, valid - k0) + 1) / 2;
      for (int j = 0; j < pairs; ++j) {
        __m512bh val[V];
        for (int v = 0; v < V; ++v) val[v] = as_bh(_mm512_load_si512(vp + (k0 / 2 + j) * D + 16 * v));
        for (int i = 0; i < N; ++i) {
          const __m512bh pk = as_bh(_mm512_set1_epi32(static_cast<int>(pw[i][j])));
          for (int v = 0; v < V; ++v) w[i][v] = _mm512_dpbf16_ps(w[i][v], pk, val[v]);
        }
      }
      for (int i = 0; i < N; ++i)
        for (int v = 0; v < V; ++v) _mm512_store_ps(acc + (r + i) * D + 16 * v, w[i][v]);
    }
  }
};

template <int D>
void attend(torch::Tensor& out, const torch::Tensor& query, const torch::Tensor& kv_cache, const Tree& tree,
            double scale, int64_t chunk_blocks, int64_t tile_rows) {
  const int S = query.size(0), H = query.size(1), KVH = kv_cache.size(1), bs = kv_cache.size(2);
  const int G = H / KVH;
  Kernel<D> kernel{query.data_ptr<at::BFloat16>(), kv_cache.data_ptr<at::BFloat16>(), query.stride(0),
                   query.stride(1), kv_cache.stride(0), kv_cache.stride(1), G, bs, static_cast<float>(scale), &tree};
  const int tile_seqs = std::max<int>(1, static_cast<int>(tile_rows) / G);
  std::vector<Item> items;
  // Per (sequence, KV head): the items that hold its rows' partial results, and where in them.
  std::vector<std::vector<std::pair<int, int>>> covers(static_cast<size_t>(S) * KVH);
  int64_t total = 0;
  for (int n = 0; n < static_cast<int>(tree.nodes.size()); ++n) {
    const Node& node = tree.nodes[n];
    const int count = node.hi - node.lo;
    for (int h = 0; h < KVH; ++h)
      for (int b = node.b0; b < node.b1; b += chunk_blocks)
        for (int s = 0; s < count; s += tile_seqs) {
          const int s1 = std::min(count, s + tile_seqs);
          items.push_back({n, h, b, std::min<int>(node.b1, b + chunk_blocks), s, s1, total});
          for (int i = s; i < s1; ++i)
            covers[static_cast<size_t>(tree.order[node.lo + i]) * KVH + h].push_back(
                {static_cast<int>(items.size()) - 1, (i - s) * G});
          total += static_cast<int64_t>(s1 - s) * G * (D + 2);
        }
  }
  std::vector<float> partial(total);
  std::atomic<int64_t> next{0};
  const int64_t n_items = items.size();
  // Items differ in size by a hundredfold, so threads take them one at a time.
  at::parallel_for(0, at::get_num_threads(), 1, [&](int64_t, int64_t) {
    for (int64_t i; (i = next.fetch_add(1)) < n_items;) kernel.run(items[i], partial.data() + items[i].out);
  });
  at::BFloat16* o = out.data_ptr<at::BFloat16>();
  const int64_t o_seq = out.stride(0), o_head = out.stride(1);
  at::parallel_for(0, S, 8, [&](int64_t s0, int64_t s1) {
    std::vector<float> acc(D);
    for (int64_t s = s0; s < s1; ++s) {
      for (int h = 0; h < KVH; ++h)
        for (int g = 0; g < G; ++g) {
          const auto& parts = covers[s * KVH + h];
          float m = kNegInf;
          for (auto [item, row] : parts) m = std::max(m, partial[items[item].out + (row + g) * (D + 2)]);
          float l = 0.0f;
          std::fill(acc.begin(), acc.end(), 0.0f);
          for (auto [item, row] : parts) {
            const float* p = partial.data() + items[item].out + (row + g) * (D + 2);
            const float w = std::exp(p[0] - m);
            l += w * p[1];
            for (int d = 0; d < D; ++d) acc[d] += w * p[2 + d];
          }
          at::BFloat16* dst = o + s * o_seq + (h * G + g) * o_head;
          for (int d = 0; d < D; ++d) dst[d] = at::BFloat16(acc[d] / l);
        }
    }
  });
}

}  // namespace

// out, query: [S, H, D] bf16 (one decode token per sequence); kv_cache: vLLM's CPU cache
// [blocks, kv_heads, block_size, 2D] bf16; block_table [S, max_blocks] and seq_lens [S] int32.
void decode_attention(torch::Tensor out, torch::Tensor query, torch::Tensor kv_cache, torch::Tensor block_table,
                      torch::Tensor seq_lens, double scale, int64_t chunk_blocks, int64_t tile_rows) {
  TORCH_CHECK(query.scalar_type() == at::kBFloat16 && kv_cache.scalar_type() == at::kBFloat16 &&
                  out.scalar_type() == at::kBFloat16, "decode_attention: bf16 query, cache and output only");
  TORCH_CHECK(block_table.scalar_type() == at::kInt && seq_lens.scalar_type() == at::kInt,
              "decode_attention: int32 block table and sequence lengths");
  TORCH_CHECK(query.stride(2) == 1 && out.stride(2) == 1 && kv_cache.is_contiguous() && block_table.stride(1) == 1 &&
                  seq_lens.is_contiguous(), "decode_attention: unit stride in the last dimension");
  const int S = query.size(0), D = query.size(2), bs = kv_cache.size(2);
  // Blocks of 32 or 64: a tile keeps one block's probabilities in 32 words a row.
  TORCH_CHECK(kv_cache.size(3) == 2 * D && (bs == 32 || bs == 64) && query.size(1) % kv_cache.size(1) == 0,
              "decode_attention: cache layout [blocks, kv_heads, block_size (32 or 64), 2 * head_dim]");
  Tree tree{block_table.data_ptr<int32_t>(), block_table.stride(0), seq_lens.data_ptr<int32_t>(), bs, {}, {}};
  tree.order.resize(S);
  for (int s = 0; s < S; ++s) {
    TORCH_CHECK(seq_lens.data_ptr<int32_t>()[s] > 0, "decode_attention: empty sequence");
    tree.order[s] = s;
  }
  std::sort(tree.order.begin(), tree.order.end(), [&](int a, int b) {
    const int na = tree.blocks_of(a), nb = tree.blocks_of(b);
    for (int k = 0; k < std::min(na, nb); ++k)
      if (tree.block(a, k) != tree.block(b, k)) return tree.block(a, k) < tree.block(b, k);
    return na < nb || (na == nb && a < b);
  });
  if (S > 0) tree.build(0, S, 0);
  if (D == 32)
    attend<32>(out, query, kv_cache, tree, scale, chunk_blocks, tile_rows);
  else if (D == 64)
    attend<64>(out, query, kv_cache, tree, scale, chunk_blocks, tile_rows);
  else if (D == 128)
    attend<128>(out, query, kv_cache, tree, scale, chunk_blocks, tile_rows);
  else
    TORCH_CHECK(false, "decode_attention: head_dim 32, 64 or 128 only");
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("decode_attention", &decode_attention, "cascade decode attention over vLLM's CPU paged KV cache");
}
