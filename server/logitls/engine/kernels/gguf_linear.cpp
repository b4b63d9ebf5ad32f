// A linear layer straight from a GGUF's Q4_0 / Q4_1 / Q8_0 blocks, in fp32 arithmetic.
//
// torch's int4 CPU kernel rounds its input, scales and output to bf16; this one computes with the
// weights' exact fp32 values (the ones transformers' GGUF loader dequantizes to) and fp32 inputs, so
// its numbers differ from the dense fp32 layer only in the order of the additions. Decode reads
// 0.56-1.06 bytes a weight instead of 4.
//
// Blocks are kept as the file stores them: 32 weights a block, a row of K / 32 blocks.
//   Q4_0 (18 bytes): fp16 d, 16 bytes of codes;        w = d * (q - 8)
//   Q4_1 (20 bytes): fp16 d, fp16 m, 16 bytes of codes; w = d * q + m
//   Q8_0 (34 bytes): fp16 d, 32 signed bytes;           w = d * q
// In a Q4 block byte j holds weight j in its low nibble and weight j + 16 in its high one.
//
// Few rows (decode, a keystroke's tokens): each output row's weights are dequantized in registers
// and multiplied with every input row; many rows (a prefill, the lens): the BLAS multiplies a
// cache-sized tile of dequantized rows at a time.
//
// Built at install (see kernels/__init__.py). The weights come out bit for bit as gguf-py's: d * q is
// exact in fp32, so d * q + m rounds once whether fused or not. The AVX2 path is chosen at run
// time by the CPU's flags; any other CPU takes the plain loop. (An AVX-512 variant measured 1.7x
// slower on AMD EPYC for Q4 blocks: widening 16 bytes to a 512-bit register crosses lanes.)
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/mm.h>
#include <c10/util/Half.h>
#include <torch/library.h>

#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <vector>

#if defined(__x86_64__)
#include <immintrin.h>
#define LOGITLS_X86 1
#endif

namespace {

constexpr int kGroup = 32;
constexpr int64_t kBlasRows = 16;  // above this many input rows: dequantize a tile at a time, then GEMM
constexpr int64_t kTileFloats = 256 * 1024;  // a tile's dequantized weights: 1 MB, about a core's L2

enum Kind : int64_t { Q4_0 = 2, Q4_1 = 3, Q8_0 = 8 };

int64_t block_bytes(int64_t kind) {
  switch (kind) {
    case Q4_0: return 18;
    case Q4_1: return 20;
    case Q8_0: return 34;
  }
  TORCH_CHECK(false, "gguf_linear: unsupported block kind ", kind);
}

inline float half(const uint8_t* p) {
  uint16_t bits;
  std::memcpy(&bits, p, 2);
  return c10::detail::fp16_ieee_to_fp32_value(bits);
}

// One block's 32 weights as fp32, rounded exactly as gguf-py rounds them.
inline void dequantize_block(const uint8_t* block, int64_t kind, float* out) {
  const float d = half(block);
  if (kind == Q8_0) {
    const int8_t* q = reinterpret_cast<const int8_t*>(block + 2);
    for (int j = 0; j < kGroup; ++j) out[j] = d * static_cast<float>(q[j]);
    return;
  }
  const uint8_t* q = block + (kind == Q4_1 ? 4 : 2);
  if (kind == Q4_1) {
    const float m = half(block + 2);
    for (int j = 0; j < 16; ++j) {
      out[j] = d * static_cast<float>(q[j] & 0x0F) + m;
      out[j + 16] = d * static_cast<float>(q[j] >> 4) + m;
    }
  } else {
    for (int j = 0; j < 16; ++j) {
      out[j] = d * static_cast<float>((q[j] & 0x0F) - 8);
      out[j + 16] = d * static_cast<float>((q[j] >> 4) - 8);
    }
  }
}

// out[m, row] for rows [begin, end): plain C++, any CPU.
void rows_plain(const float* x, int64_t n_inputs, int64_t k, const uint8_t* blocks, int64_t kind, int64_t row_bytes,
                float* out, int64_t n, int64_t begin, int64_t end) {
  std::vector<float> w(k);
  for (int64_t row = begin; row < end; ++row) {
    const uint8_t* row_blocks = blocks + row * row_bytes;
    for (int64_t b = 0; b < k / kGroup; ++b)
      dequantize_block(row_blocks + b * block_bytes(kind), kind, w.data() + b * kGroup);
    for (int64_t i = 0; i < n_inputs; ++i) {
      const float* xi = x + i * k;
      float acc = 0.f;
      for (int64_t j = 0; j < k; ++j) acc += xi[j] * w[j];
      out[i * n + row] = acc;
    }
  }
}

#if LOGITLS_X86
#define LOGITLS_AVX2 __attribute__((target("avx2,fma,f16c")))

// One instruction (F16C, on every AVX2 CPU) instead of the portable bit manipulation: a block's scales
// are converted once per 32 weights, which the plain conversion would make a fifth of the work.
LOGITLS_AVX2 inline float half_f16c(const uint8_t* p) {
  uint16_t bits;
  std::memcpy(&bits, p, 2);
  return _cvtsh_ss(bits);
}

LOGITLS_AVX2 inline float hsum(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

// A block's 32 weights in four registers, the same fp32 values as dequantize_block. d * q is exact in
// fp32 (an 11-bit mantissa times a 4- or 8-bit integer), so one FMA rounds d * q + m exactly as the
// multiply-then-add of gguf-py does. Codes are widened straight from memory, two bytes' nibbles per
// lane pair: the shuffle port, not the arithmetic, limits a naive unpacking.
LOGITLS_AVX2 inline void block_ps(const uint8_t* block, int64_t kind, __m256 w[4]) {
  const __m256 d = _mm256_set1_ps(half_f16c(block));
  if (kind == Q8_0) {
    for (int part = 0; part < 4; ++part) {
      const __m128i q = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(block + 2 + 8 * part));
      w[part] = _mm256_mul_ps(d, _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(q)));
    }
    return;
  }
  const uint8_t* codes = block + (kind == Q4_1 ? 4 : 2);
  const __m256i mask = _mm256_set1_epi32(0x0F);
  const __m256i first = _mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(codes)));
  const __m256i second = _mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(codes + 8)));
  // weights 0-7, 8-15 (low nibbles of bytes 0-7, 8-15), 16-23, 24-31 (their high nibbles)
  __m256i q[4] = {_mm256_and_si256(first, mask), _mm256_and_si256(second, mask), _mm256_srli_epi32(first, 4),
                  _mm256_srli_epi32(second, 4)};
  if (kind == Q4_1) {
    const __m256 m = _mm256_set1_ps(half_f16c(block + 2));
    for (int part = 0; part < 4; ++part) w[part] = _mm256_fmadd_ps(d, _mm256_cvtepi32_ps(q[part]), m);
  } else {
    const __m256i eight = _mm256_set1_epi32(8);
    for (int part = 0; part < 4; ++part)
      w[part] = _mm256_mul_ps(d, _mm256_cvtepi32_ps(_mm256_sub_epi32(q[part], eight)));
  }
}

// One input row (a decode step): four sums, so that four independent chains of FMAs hide the
// instruction's latency (two would wait on it every block).
LOGITLS_AVX2 void one_input_avx2(const float* x, int64_t k, const uint8_t* blocks, int64_t kind,
                                                         int64_t row_bytes, float* out, int64_t begin, int64_t end) {
  const int64_t bytes = block_bytes(kind), n_blocks = k / kGroup;
  for (int64_t row = begin; row < end; ++row) {
    const uint8_t* row_blocks = blocks + row * row_bytes;
    __m256 a[4];
    for (int part = 0; part < 4; ++part) a[part] = _mm256_setzero_ps();
    for (int64_t block = 0; block < n_blocks; ++block) {
      __m256 w[4];
      block_ps(row_blocks + block * bytes, kind, w);
      const float* xb = x + block * kGroup;
      for (int part = 0; part < 4; ++part) a[part] = _mm256_fmadd_ps(_mm256_loadu_ps(xb + 8 * part), w[part], a[part]);
    }
    out[row] = hsum(_mm256_add_ps(_mm256_add_ps(a[0], a[1]), _mm256_add_ps(a[2], a[3])));
  }
}

// Up to four input rows at a time share each dequantized block.
LOGITLS_AVX2 void rows_avx2(const float* x, int64_t n_inputs, int64_t k, const uint8_t* blocks,
                                                    int64_t kind, int64_t row_bytes, float* out, int64_t n,
                                                    int64_t begin, int64_t end) {
  if (n_inputs == 1) return one_input_avx2(x, k, blocks, kind, row_bytes, out, begin, end);
  const int64_t bytes = block_bytes(kind), n_blocks = k / kGroup;
  for (int64_t row = begin; row < end; ++row) {
    const uint8_t* row_blocks = blocks + row * row_bytes;
    for (int64_t first = 0; first < n_inputs; first += 4) {
      const int64_t count = std::min<int64_t>(4, n_inputs - first);
      __m256 acc[4][2];
      for (int i = 0; i < 4; ++i) acc[i][0] = acc[i][1] = _mm256_setzero_ps();
      for (int64_t b = 0; b < n_blocks; ++b) {
        __m256 w[4];
        block_ps(row_blocks + b * bytes, kind, w);
        for (int64_t i = 0; i < count; ++i) {
          const float* xb = x + (first + i) * k + b * kGroup;
          acc[i][0] = _mm256_fmadd_ps(_mm256_loadu_ps(xb), w[0], acc[i][0]);
          acc[i][1] = _mm256_fmadd_ps(_mm256_loadu_ps(xb + 8), w[1], acc[i][1]);
          acc[i][0] = _mm256_fmadd_ps(_mm256_loadu_ps(xb + 16), w[2], acc[i][0]);
          acc[i][1] = _mm256_fmadd_ps(_mm256_loadu_ps(xb + 24), w[3], acc[i][1]);
        }
      }
      for (int64_t i = 0; i < count; ++i) out[(first + i) * n + row] = hsum(_mm256_add_ps(acc[i][0], acc[i][1]));
    }
  }
}

bool has_avx2() {  // LOGITLS_GGUF_KERNEL_PLAIN: the plain loop even here (its tests run on any machine)
  static const bool yes = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
                          __builtin_cpu_supports("f16c") &&
                          std::getenv("LOGITLS_GGUF_KERNEL_PLAIN") == nullptr;
  return yes;
}

#endif

void check(const at::Tensor& blocks, int64_t kind, int64_t k) {
  TORCH_CHECK(blocks.scalar_type() == at::kByte && blocks.dim() == 2 && blocks.is_contiguous(),
              "gguf_linear: blocks must be a contiguous uint8 [N, K / 32 * block bytes] tensor");
  TORCH_CHECK(k % kGroup == 0 && blocks.size(1) == k / kGroup * block_bytes(kind),
              "gguf_linear: ", k, " inputs do not fit rows of ", blocks.size(1), " bytes");
}

at::Tensor dequantize(const at::Tensor& blocks, int64_t kind, int64_t k) {
  check(blocks, kind, k);
  const int64_t n = blocks.size(0), row_bytes = blocks.size(1), bytes = block_bytes(kind);
  at::Tensor weight = at::empty({n, k}, blocks.options().dtype(at::kFloat));
  const uint8_t* src = blocks.data_ptr<uint8_t>();
  float* dst = weight.data_ptr<float>();
  at::parallel_for(0, n, 64, [&](int64_t begin, int64_t end) {
    for (int64_t row = begin; row < end; ++row)
      for (int64_t b = 0; b < k / kGroup; ++b)
        dequantize_block(src + row * row_bytes + b * bytes, kind, dst + row * k + b * kGroup);
  });
  return weight;
}

// Many input rows (a prefill, the lens's chunks): the weight a tile of rows at a time, dequantized into
// a buffer that stays in the core's cache and multiplied by the BLAS there; the dequantized weight
// never makes the round trip through memory that dequantizing it whole would cost.
at::Tensor tiled(const at::Tensor& x, const at::Tensor& blocks, int64_t kind, int64_t k) {
  const int64_t rows = x.size(0), n = blocks.size(0), row_bytes = blocks.size(1), bytes = block_bytes(kind);
  const int64_t tile = std::max<int64_t>(16, std::min<int64_t>(256, kTileFloats / k));
  at::Tensor out = at::empty({rows, n}, x.options());
  const uint8_t* src = blocks.data_ptr<uint8_t>();
  float* dst_out = out.data_ptr<float>();
  at::parallel_for(0, (n + tile - 1) / tile, 1, [&](int64_t first, int64_t last) {
    at::Tensor weight = at::empty({tile, k}, x.options());
    float* dst = weight.data_ptr<float>();
    for (int64_t t = first; t < last; ++t) {
      const int64_t begin = t * tile, count = std::min(tile, n - begin);
      for (int64_t row = 0; row < count; ++row)
        for (int64_t b = 0; b < k / kGroup; ++b)
          dequantize_block(src + (begin + row) * row_bytes + b * bytes, kind, dst + row * k + b * kGroup);
      // raw copies: no ATen op writes to `out` here, off the caller's thread (an inference tensor
      // there, and the worker threads do not run in inference mode)
      const at::Tensor part = at::mm(x, weight.narrow(0, 0, count).t()).contiguous();
      const float* from = part.data_ptr<float>();
      for (int64_t i = 0; i < rows; ++i) std::memcpy(dst_out + i * n + begin, from + i * count, count * sizeof(float));
    }
  });
  return out;
}

at::Tensor linear(const at::Tensor& input, const at::Tensor& blocks, int64_t kind, int64_t k) {
  check(blocks, kind, k);
  TORCH_CHECK(input.scalar_type() == at::kFloat && input.size(-1) == k, "gguf_linear: input must be fp32 [..., ", k, "]");
  const at::Tensor x = input.reshape({-1, k}).contiguous();
  const int64_t rows = x.size(0), n = blocks.size(0);
  if (rows > kBlasRows) return tiled(x, blocks, kind, k);
  at::Tensor out = at::empty({rows, n}, x.options());
  const float* xp = x.data_ptr<float>();
  const uint8_t* bp = blocks.data_ptr<uint8_t>();
  float* op = out.data_ptr<float>();
  const int64_t row_bytes = blocks.size(1);
  auto rows_of = &rows_plain;
#if LOGITLS_X86
  if (has_avx2()) rows_of = &rows_avx2;
#endif
  at::parallel_for(0, n, 16, [&](int64_t begin, int64_t end) {
    rows_of(xp, rows, k, bp, kind, row_bytes, op, n, begin, end);
  });
  return out;
}

std::string path() {
#if LOGITLS_X86
  return has_avx2() ? "avx2" : "plain";
#else
  return "plain";
#endif
}

}  // namespace

TORCH_LIBRARY(logitls, m) {
  m.def("gguf_linear(Tensor input, Tensor blocks, int kind, int k) -> Tensor", &linear);
  m.def("gguf_dequantize(Tensor blocks, int kind, int k) -> Tensor", &dequantize);
  m.def("gguf_kernel_path() -> str", &path);
}
