// A linear layer straight from a GGUF's quantised blocks, in fp32 arithmetic.
//
// torch's int4 CPU kernel rounds its input, scales and output to bf16; this one computes with the
// weights' exact fp32 values (the ones transformers' GGUF loader dequantizes to, gguf-py's
// `gguf.quants.dequantize`) and fp32 inputs, so its numbers differ from the dense fp32 layer only in
// the order of the additions. Decode reads 0.56-1.06 bytes a weight instead of 4.
//
// Blocks are kept as the file stores them, a row of K / (weights a block) blocks:
//   Q4_0 (32 weights, 18 bytes): fp16 d, 16 bytes of codes;                  w = d * (q - 8)
//   Q4_1 (32, 20): fp16 d, fp16 m, 16 bytes of codes;                        w = d * q + m
//   Q5_0 (32, 22): fp16 d, 4 bytes of fifth bits, 16 bytes of codes;         w = d * (q - 16)
//   Q5_1 (32, 24): fp16 d, fp16 m, 4 bytes of fifth bits, 16 bytes of codes; w = d * q + m
//   Q8_0 (32, 34): fp16 d, 32 signed bytes;                                  w = d * q
//   Q4_K (256, 144): fp16 d, fp16 dmin, 12 bytes of 6-bit scales and mins, 128 bytes of codes;
//                    w = (d * sc) * q - dmin * mn per 32 weights
//   Q5_K (256, 176): as Q4_K, then 32 bytes of fifth bits before the codes
//   Q6_K (256, 210): 128 bytes of low nibbles, 64 of high 2 bits, 16 int8 scales, fp16 d;
//                    w = (d * sc) * (q - 32) per 16 weights
// In a Q4/Q5 block byte j holds weight j in its low nibble and weight j + 16 in its high one; the
// K-quants' layouts are spelled out in dequantize_block.
//
// Few rows (decode, a keystroke's tokens): each output row's weights are dequantized in registers
// and multiplied with every input row; many rows (a prefill, the lens): the BLAS multiplies a
// cache-sized tile of dequantized rows at a time.
//
// Built at install (see kernels/__init__.py). The weights come out bit for bit as gguf-py's: every
// product of fp16 scales and small integer codes that gguf-py does not round is exact in fp32 here
// too (d * sc * q of Q4_K/Q5_K has at most 22 significant bits), and the one product it rounds (Q6_K's
// (d * sc) * q) is rounded once here as there; so d * q + m rounds once whether fused or not. The AVX2
// path is chosen at run time by the CPU's flags; any other CPU takes the plain loop. (An AVX-512
// variant measured 1.7x slower on AMD EPYC for Q4 blocks: widening 16 bytes to a 512-bit register
// crosses lanes.)
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/addmm.h>
#include <ATen/ops/mm.h>
#include <c10/util/Half.h>
#include <torch/library.h>

#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <optional>
#include <utility>
#include <vector>

#if defined(__x86_64__)
#include <immintrin.h>
#define LOGITLS_X86 1
#endif

namespace {

constexpr int kGroup = 32;  // the weights one register group covers: a Q4_0..Q8_0 block, a K-quant's sub-block
constexpr int64_t kBlasRows = 16;  // above this many input rows: dequantize a tile at a time, then GEMM
constexpr int64_t kTileFloats = 256 * 1024;  // a tile's dequantized weights: 1 MB, about a core's L2

// ggml's type ids (gguf.GGMLQuantizationType)
enum Kind : int64_t { Q4_0 = 2, Q4_1 = 3, Q5_0 = 6, Q5_1 = 7, Q8_0 = 8, Q4_K = 12, Q5_K = 13, Q6_K = 14 };

int64_t block_bytes(int64_t kind) {
  switch (kind) {
    case Q4_0: return 18;
    case Q4_1: return 20;
    case Q5_0: return 22;
    case Q5_1: return 24;
    case Q8_0: return 34;
    case Q4_K: return 144;
    case Q5_K: return 176;
    case Q6_K: return 210;
  }
  TORCH_CHECK(false, "gguf_linear: unsupported block kind ", kind);
}

int64_t block_weights(int64_t kind) { return kind == Q4_K || kind == Q5_K || kind == Q6_K ? 256 : 32; }

inline float half(const uint8_t* p) {
  uint16_t bits;
  std::memcpy(&bits, p, 2);
  return c10::detail::fp16_ieee_to_fp32_value(bits);
}

inline uint32_t fifth_bits(const uint8_t* p) {
  uint32_t bits;
  std::memcpy(&bits, p, 4);
  return bits;
}

// Q4_K/Q5_K: sub-block j's 6-bit scale and min from the 12 packed bytes (ggml's get_scale_min_k4).
inline void scale_min_k4(int j, const uint8_t* q, int& sc, int& mn) {
  if (j < 4) {
    sc = q[j] & 63;
    mn = q[j + 4] & 63;
  } else {
    sc = (q[j + 4] & 0x0F) | ((q[j - 4] >> 6) << 4);
    mn = (q[j + 4] >> 4) | ((q[j] >> 6) << 4);
  }
}

// One block's weights (32, or 256 for a K-quant) as fp32, rounded exactly as gguf-py rounds them.
inline void dequantize_block(const uint8_t* block, int64_t kind, float* out) {
  switch (kind) {
    case Q8_0: {
      const float d = half(block);
      const int8_t* q = reinterpret_cast<const int8_t*>(block + 2);
      for (int j = 0; j < kGroup; ++j) out[j] = d * static_cast<float>(q[j]);
      return;
    }
    case Q4_0: case Q4_1: {
      const float d = half(block);
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
      return;
    }
    case Q5_0: case Q5_1: {  // bit j of the 32-bit word is weight j's fifth bit
      const float d = half(block);
      const bool one = kind == Q5_1;
      const float m = one ? half(block + 2) : 0.f;
      const uint32_t high = fifth_bits(block + (one ? 4 : 2));
      const uint8_t* q = block + (one ? 8 : 6);
      for (int j = 0; j < 16; ++j) {
        const int lo = (q[j] & 0x0F) | (((high >> j) & 1) << 4), hi = (q[j] >> 4) | (((high >> (j + 16)) & 1) << 4);
        if (one) {
          out[j] = d * static_cast<float>(lo) + m;
          out[j + 16] = d * static_cast<float>(hi) + m;
        } else {
          out[j] = d * static_cast<float>(lo - 16);
          out[j + 16] = d * static_cast<float>(hi - 16);
        }
      }
      return;
    }
    case Q4_K: case Q5_K: {
      // sub-block g: codes in the low (g even) or high (g odd) nibbles of bytes 32 * (g / 2) ..;
      // Q5_K's fifth bit of weight l of sub-block g is bit g of fifth-bit byte l
      const float d = half(block), dmin = half(block + 2);
      const uint8_t* scales = block + 4;
      const bool five = kind == Q5_K;
      const uint8_t* high = block + 16;
      const uint8_t* codes = block + (five ? 48 : 16);
      for (int g = 0; g < 8; ++g) {
        int sc, mn;
        scale_min_k4(g, scales, sc, mn);
        const float scale = d * static_cast<float>(sc), min = dmin * static_cast<float>(mn);
        const uint8_t* q = codes + 32 * (g / 2);
        const int shift = 4 * (g & 1);
        for (int l = 0; l < kGroup; ++l) {
          int code = (q[l] >> shift) & 0x0F;
          if (five) code |= ((high[l] >> g) & 1) << 4;
          out[g * kGroup + l] = scale * static_cast<float>(code) - min;
        }
      }
      return;
    }
    case Q6_K: {
      // weight 128 h + 32 t + l (t, l in 0..3, 0..31): low nibble (t < 2) or high nibble (t >= 2) of
      // byte 64 h + 32 (t & 1) + l, high 2 bits at bit 2 t of byte 128 + 32 h + l; one scale per 16
      const float d = half(block + 208);
      const int8_t* scales = reinterpret_cast<const int8_t*>(block + 192);
      for (int g = 0; g < 8; ++g) {
        const int h = g / 4, t = g % 4;
        const uint8_t* low = block + 64 * h + 32 * (t & 1);
        const uint8_t* high = block + 128 + 32 * h;
        for (int l = 0; l < kGroup; ++l) {
          const int code = (((low[l] >> (4 * (t >> 1))) & 0x0F) | (((high[l] >> (2 * t)) & 3) << 4)) - 32;
          const float scale = d * static_cast<float>(scales[2 * g + l / 16]);
          out[g * kGroup + l] = scale * static_cast<float>(code);
        }
      }
      return;
    }
  }
  TORCH_CHECK(false, "gguf_linear: unsupported block kind ", kind);
}

void dequantize_row_plain(const uint8_t* row_blocks, int64_t kind, int64_t k, float* out) {
  const int64_t bytes = block_bytes(kind), weights = block_weights(kind);
  for (int64_t b = 0; b < k / weights; ++b) dequantize_block(row_blocks + b * bytes, kind, out + b * weights);
}

// out[m, row] for rows [begin, end): plain C++, any CPU.
void rows_plain(const float* x, int64_t n_inputs, int64_t k, const uint8_t* blocks, int64_t kind, int64_t row_bytes,
                float* out, int64_t n, int64_t begin, int64_t end) {
  std::vector<float> w(k);
  for (int64_t row = begin; row < end; ++row) {
    dequantize_row_plain(blocks + row * row_bytes, kind, k, w.data());
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

// 8 bytes widened to 8 int32 lanes
LOGITLS_AVX2 inline __m256i bytes8(const uint8_t* p) {
  return _mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(p)));
}

// Q5_0/Q5_1: the fifth bits of weights 8 part .. 8 part + 7, as 16 or 0 per lane.
LOGITLS_AVX2 inline __m256i fifth8(uint32_t high, int part) {
  const __m256i lanes = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
  const __m256i bits = _mm256_srlv_epi32(_mm256_set1_epi32(static_cast<int>(high)),
                                         _mm256_add_epi32(lanes, _mm256_set1_epi32(8 * part)));
  return _mm256_slli_epi32(_mm256_and_si256(bits, _mm256_set1_epi32(1)), 4);
}

// A 32-weight block's weights (Q4_0 .. Q8_0; K-quants: pair_ps) in four registers, the same fp32
// values as dequantize_block: the same products, each rounded once (an FMA
// where gguf-py's product is exact). Codes are widened straight from memory, 8 bytes to 8 lanes: the
// shuffle port, not the arithmetic, limits a naive unpacking.
template <int64_t KIND>
LOGITLS_AVX2 inline void group_ps(const uint8_t* block, __m256 w[4]) {
  const __m256i nibble = _mm256_set1_epi32(0x0F);
  if constexpr (KIND == Q8_0) {
    const __m256 d = _mm256_set1_ps(half_f16c(block));
    for (int part = 0; part < 4; ++part) {
      const __m128i q = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(block + 2 + 8 * part));
      w[part] = _mm256_mul_ps(d, _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(q)));
    }
  } else if constexpr (KIND == Q4_0 || KIND == Q4_1 || KIND == Q5_0 || KIND == Q5_1) {
    constexpr bool has_min = KIND == Q4_1 || KIND == Q5_1, five = KIND == Q5_0 || KIND == Q5_1;
    const __m256 d = _mm256_set1_ps(half_f16c(block));
    const uint8_t* codes = block + 2 + (has_min ? 2 : 0) + (five ? 4 : 0);
    const __m256i first = bytes8(codes), second = bytes8(codes + 8);
    // weights 0-7, 8-15 (low nibbles of bytes 0-7, 8-15), 16-23, 24-31 (their high nibbles)
    __m256i q[4] = {_mm256_and_si256(first, nibble), _mm256_and_si256(second, nibble), _mm256_srli_epi32(first, 4),
                    _mm256_srli_epi32(second, 4)};
    if constexpr (five) {
      const uint32_t high = fifth_bits(block + (has_min ? 4 : 2));
      for (int part = 0; part < 4; ++part) q[part] = _mm256_or_si256(q[part], fifth8(high, part));
    }
    if constexpr (has_min) {
      const __m256 m = _mm256_set1_ps(half_f16c(block + 2));
      for (int part = 0; part < 4; ++part) w[part] = _mm256_fmadd_ps(d, _mm256_cvtepi32_ps(q[part]), m);
    } else {
      const __m256i offset = _mm256_set1_epi32(five ? 16 : 8);
      for (int part = 0; part < 4; ++part)
        w[part] = _mm256_mul_ps(d, _mm256_cvtepi32_ps(_mm256_sub_epi32(q[part], offset)));
    }
  }
}

template <int64_t KIND>
LOGITLS_AVX2 inline void pair_ps(const uint8_t* block, int p, __m256 w[8], int* first, int* second) {
  const __m256i nibble = _mm256_set1_epi32(0x0F);
  if constexpr (KIND == Q4_K || KIND == Q5_K) {
    constexpr bool five = KIND == Q5_K;
    *first = 2 * p;
    *second = 2 * p + 1;
    int sc0, mn0, sc1, mn1;
    scale_min_k4(*first, block + 4, sc0, mn0);
    scale_min_k4(*second, block + 4, sc1, mn1);
    const float d = half_f16c(block), dmin = half_f16c(block + 2);
    const __m256 scale0 = _mm256_set1_ps(d * static_cast<float>(sc0)), min0 = _mm256_set1_ps(dmin * static_cast<float>(mn0));
    const __m256 scale1 = _mm256_set1_ps(d * static_cast<float>(sc1)), min1 = _mm256_set1_ps(dmin * static_cast<float>(mn1));
    const uint8_t* q = block + (five ? 48 : 16) + 32 * p;
    const __m128i bit0 = _mm_cvtsi32_si128(*first), bit1 = _mm_cvtsi32_si128(*second);
    const __m256i one = _mm256_set1_epi32(1);
    for (int part = 0; part < 4; ++part) {
      const __m256i codes = bytes8(q + 8 * part);
      __m256i lo = _mm256_and_si256(codes, nibble), hi = _mm256_srli_epi32(codes, 4);
      if constexpr (five) {
        const __m256i high = bytes8(block + 16 + 8 * part);
        lo = _mm256_or_si256(lo, _mm256_slli_epi32(_mm256_and_si256(_mm256_srl_epi32(high, bit0), one), 4));
        hi = _mm256_or_si256(hi, _mm256_slli_epi32(_mm256_and_si256(_mm256_srl_epi32(high, bit1), one), 4));
      }
      w[part] = _mm256_fmsub_ps(scale0, _mm256_cvtepi32_ps(lo), min0);
      w[4 + part] = _mm256_fmsub_ps(scale1, _mm256_cvtepi32_ps(hi), min1);
    }
  } else if constexpr (KIND == Q6_K) {
    const int h = p >> 1, t = p & 1;
    *first = 4 * h + t;
    *second = 4 * h + t + 2;
    const float d = half_f16c(block + 208);
    const int8_t* scales = reinterpret_cast<const int8_t*>(block + 192);
    const __m256 scale0[2] = {_mm256_set1_ps(d * static_cast<float>(scales[2 * *first])),
                              _mm256_set1_ps(d * static_cast<float>(scales[2 * *first + 1]))};
    const __m256 scale1[2] = {_mm256_set1_ps(d * static_cast<float>(scales[2 * *second])),
                              _mm256_set1_ps(d * static_cast<float>(scales[2 * *second + 1]))};
    const uint8_t* low = block + 64 * h + 32 * t;
    const uint8_t* high = block + 128 + 32 * h;
    const __m128i shift0 = _mm_cvtsi32_si128(2 * t), shift1 = _mm_cvtsi32_si128(2 * t + 4);
    const __m256i three = _mm256_set1_epi32(3), offset = _mm256_set1_epi32(32);
    for (int part = 0; part < 4; ++part) {
      const __m256i lb = bytes8(low + 8 * part), hb = bytes8(high + 8 * part);
      const __m256i lo = _mm256_or_si256(_mm256_and_si256(lb, nibble),
                                         _mm256_slli_epi32(_mm256_and_si256(_mm256_srl_epi32(hb, shift0), three), 4));
      const __m256i hi = _mm256_or_si256(_mm256_srli_epi32(lb, 4),
                                         _mm256_slli_epi32(_mm256_and_si256(_mm256_srl_epi32(hb, shift1), three), 4));
      w[part] = _mm256_mul_ps(scale0[part >> 1], _mm256_cvtepi32_ps(_mm256_sub_epi32(lo, offset)));
      w[4 + part] = _mm256_mul_ps(scale1[part >> 1], _mm256_cvtepi32_ps(_mm256_sub_epi32(hi, offset)));
    }
  }
}

template <int64_t KIND>
LOGITLS_AVX2 void dequantize_row_avx2_t(const uint8_t* row_blocks, int64_t k, float* out) {
  constexpr int64_t weights = (KIND == Q4_K || KIND == Q5_K || KIND == Q6_K) ? 256 : 32;
  const int64_t bytes = block_bytes(KIND);
  for (int64_t b = 0; b < k / weights; ++b) {
    if constexpr (weights == 256) {  // the decode step's pairs: what gguf_dequantize checks is what runs
      for (int p = 0; p < 4; ++p) {
        __m256 w[8];
        int first, second;
        pair_ps<KIND>(row_blocks + b * bytes, p, w, &first, &second);
        for (int part = 0; part < 4; ++part) {
          _mm256_storeu_ps(out + b * weights + first * kGroup + 8 * part, w[part]);
          _mm256_storeu_ps(out + b * weights + second * kGroup + 8 * part, w[4 + part]);
        }
      }
    } else {
      __m256 w[4];
      group_ps<KIND>(row_blocks + b * bytes, w);
      for (int part = 0; part < 4; ++part) _mm256_storeu_ps(out + b * weights + 8 * part, w[part]);
    }
  }
}

// One input row (a decode step): four sums, so that four independent chains of FMAs hide the
// instruction's latency (two would wait on it every block).
template <int64_t KIND>
LOGITLS_AVX2 void one_input_avx2(const float* x, int64_t k, const uint8_t* blocks, int64_t row_bytes, float* out,
                                 int64_t begin, int64_t end) {
  constexpr int64_t weights = (KIND == Q4_K || KIND == Q5_K || KIND == Q6_K) ? 256 : 32;
  const int64_t bytes = block_bytes(KIND), n_blocks = k / weights;
  for (int64_t row = begin; row < end; ++row) {
    const uint8_t* row_blocks = blocks + row * row_bytes;
    __m256 a[4];
    for (int part = 0; part < 4; ++part) a[part] = _mm256_setzero_ps();
    for (int64_t block = 0; block < n_blocks; ++block) {
      if constexpr (weights == 256) {
        for (int p = 0; p < 4; ++p) {
          __m256 w[8];
          int first, second;
          pair_ps<KIND>(row_blocks + block * bytes, p, w, &first, &second);
          const float* xa = x + block * weights + first * kGroup;
          const float* xb = x + block * weights + second * kGroup;
          for (int part = 0; part < 4; ++part) {
            a[part] = _mm256_fmadd_ps(_mm256_loadu_ps(xa + 8 * part), w[part], a[part]);
            a[part] = _mm256_fmadd_ps(_mm256_loadu_ps(xb + 8 * part), w[4 + part], a[part]);
          }
        }
      } else {
        __m256 w[4];
        group_ps<KIND>(row_blocks + block * bytes, w);
        const float* xb = x + block * weights;
        for (int part = 0; part < 4; ++part) a[part] = _mm256_fmadd_ps(_mm256_loadu_ps(xb + 8 * part), w[part], a[part]);
      }
    }
    out[row] = hsum(_mm256_add_ps(_mm256_add_ps(a[0], a[1]), _mm256_add_ps(a[2], a[3])));
  }
}

// Up to four input rows at a time share each dequantized group.
template <int64_t KIND>
LOGITLS_AVX2 void rows_avx2_t(const float* x, int64_t n_inputs, int64_t k, const uint8_t* blocks, int64_t row_bytes,
                              float* out, int64_t n, int64_t begin, int64_t end) {
  if (n_inputs == 1) return one_input_avx2<KIND>(x, k, blocks, row_bytes, out, begin, end);
  constexpr int64_t weights = (KIND == Q4_K || KIND == Q5_K || KIND == Q6_K) ? 256 : 32;
  const int64_t bytes = block_bytes(KIND), n_blocks = k / weights;
  for (int64_t row = begin; row < end; ++row) {
    const uint8_t* row_blocks = blocks + row * row_bytes;
    for (int64_t first = 0; first < n_inputs; first += 4) {
      const int64_t count = std::min<int64_t>(4, n_inputs - first);
      __m256 acc[4][2];
      for (int i = 0; i < 4; ++i) acc[i][0] = acc[i][1] = _mm256_setzero_ps();
      for (int64_t b = 0; b < n_blocks; ++b) {
        if constexpr (weights == 256) {
          for (int p = 0; p < 4; ++p) {
            __m256 w[8];
            int sub0, sub1;
            pair_ps<KIND>(row_blocks + b * bytes, p, w, &sub0, &sub1);
            for (int64_t i = 0; i < count; ++i) {
              const float* xa = x + (first + i) * k + b * weights + sub0 * kGroup;
              const float* xb = x + (first + i) * k + b * weights + sub1 * kGroup;
              for (int part = 0; part < 4; ++part) {
                acc[i][part & 1] = _mm256_fmadd_ps(_mm256_loadu_ps(xa + 8 * part), w[part], acc[i][part & 1]);
                acc[i][part & 1] = _mm256_fmadd_ps(_mm256_loadu_ps(xb + 8 * part), w[4 + part], acc[i][part & 1]);
              }
            }
          }
        } else {
          __m256 w[4];
          group_ps<KIND>(row_blocks + b * bytes, w);
          for (int64_t i = 0; i < count; ++i) {
            const float* xb = x + (first + i) * k + b * weights;
            acc[i][0] = _mm256_fmadd_ps(_mm256_loadu_ps(xb), w[0], acc[i][0]);
            acc[i][1] = _mm256_fmadd_ps(_mm256_loadu_ps(xb + 8), w[1], acc[i][1]);
            acc[i][0] = _mm256_fmadd_ps(_mm256_loadu_ps(xb + 16), w[2], acc[i][0]);
            acc[i][1] = _mm256_fmadd_ps(_mm256_loadu_ps(xb + 24), w[3], acc[i][1]);
          }
        }
      }
      for (int64_t i = 0; i < count; ++i) out[(first + i) * n + row] = hsum(_mm256_add_ps(acc[i][0], acc[i][1]));
    }
  }
}

using RowsFn = void (*)(const float*, int64_t, int64_t, const uint8_t*, int64_t, float*, int64_t, int64_t, int64_t);
using DequantizeFn = void (*)(const uint8_t*, int64_t, float*);

template <int64_t KIND>
constexpr std::pair<RowsFn, DequantizeFn> avx2_of() {
  return {&rows_avx2_t<KIND>, &dequantize_row_avx2_t<KIND>};
}

std::pair<RowsFn, DequantizeFn> avx2_functions(int64_t kind) {
  switch (kind) {
    case Q4_0: return avx2_of<Q4_0>();
    case Q4_1: return avx2_of<Q4_1>();
    case Q5_0: return avx2_of<Q5_0>();
    case Q5_1: return avx2_of<Q5_1>();
    case Q8_0: return avx2_of<Q8_0>();
    case Q4_K: return avx2_of<Q4_K>();
    case Q5_K: return avx2_of<Q5_K>();
    case Q6_K: return avx2_of<Q6_K>();
  }
  TORCH_CHECK(false, "gguf_linear: unsupported block kind ", kind);
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
              "gguf_linear: blocks must be a contiguous uint8 [N, K / block weights * block bytes] tensor");
  const int64_t weights = block_weights(kind);
  TORCH_CHECK(k % weights == 0 && blocks.size(1) == k / weights * block_bytes(kind),
              "gguf_linear: ", k, " inputs do not fit rows of ", blocks.size(1), " bytes");
}

// The code paths this CPU runs for `kind`: the rows' products and the rows' dequantization (which a
// prefill's tiles and gguf_dequantize use, so that checking the latter checks the path that runs).
struct Paths {
  void (*rows)(const float*, int64_t, int64_t, const uint8_t*, int64_t, float*, int64_t, int64_t, int64_t);
  void (*dequantize_row)(const uint8_t*, int64_t, float*);
  int64_t kind;

  void run_rows(const float* x, int64_t n_inputs, int64_t k, const uint8_t* blocks, int64_t row_bytes, float* out,
                int64_t n, int64_t begin, int64_t end) const {
    if (rows) return rows(x, n_inputs, k, blocks, row_bytes, out, n, begin, end);
    rows_plain(x, n_inputs, k, blocks, kind, row_bytes, out, n, begin, end);
  }
  void run_dequantize_row(const uint8_t* row_blocks, int64_t k, float* out) const {
    if (dequantize_row) return dequantize_row(row_blocks, k, out);
    dequantize_row_plain(row_blocks, kind, k, out);
  }
};

Paths paths_for(int64_t kind) {
#if LOGITLS_X86
  if (has_avx2()) {
    const auto [rows, dequantize_row] = avx2_functions(kind);
    return {rows, dequantize_row, kind};
  }
#endif
  return {nullptr, nullptr, kind};
}

at::Tensor dequantize(const at::Tensor& blocks, int64_t kind, int64_t k) {
  check(blocks, kind, k);
  const Paths paths = paths_for(kind);
  const int64_t n = blocks.size(0), row_bytes = blocks.size(1);
  at::Tensor weight = at::empty({n, k}, blocks.options().dtype(at::kFloat));
  const uint8_t* src = blocks.data_ptr<uint8_t>();
  float* dst = weight.data_ptr<float>();
  at::parallel_for(0, n, 64, [&](int64_t begin, int64_t end) {
    for (int64_t row = begin; row < end; ++row) paths.run_dequantize_row(src + row * row_bytes, k, dst + row * k);
  });
  return weight;
}

// Many input rows (a prefill, the lens's chunks): the weight a tile of rows at a time, dequantized into
// a buffer that stays in the core's cache and multiplied by the BLAS there; the dequantized weight
// never makes the round trip through memory that dequantizing it whole would cost.
at::Tensor tiled(const at::Tensor& x, const at::Tensor& blocks, int64_t kind, int64_t k, const Paths& paths,
                 const std::optional<at::Tensor>& bias) {
  const int64_t rows = x.size(0), n = blocks.size(0), row_bytes = blocks.size(1);
  const int64_t tile = std::max<int64_t>(16, std::min<int64_t>(256, kTileFloats / k));
  at::Tensor out = at::empty({rows, n}, x.options());
  const uint8_t* src = blocks.data_ptr<uint8_t>();
  float* dst_out = out.data_ptr<float>();
  at::parallel_for(0, (n + tile - 1) / tile, 1, [&](int64_t first, int64_t last) {
    at::Tensor weight = at::empty({tile, k}, x.options());
    float* dst = weight.data_ptr<float>();
    for (int64_t t = first; t < last; ++t) {
      const int64_t begin = t * tile, count = std::min(tile, n - begin);
      for (int64_t row = 0; row < count; ++row) paths.run_dequantize_row(src + (begin + row) * row_bytes, k, dst + row * k);
      // raw copies: no ATen op writes to `out` here, off the caller's thread (an inference tensor
      // there, and the worker threads do not run in inference mode)
      // with a bias, addmm as the dense layer (F.linear) computes it: bit for bit its numbers
      const at::Tensor tile_weight = weight.narrow(0, 0, count).t();
      const at::Tensor part = (bias ? at::addmm(bias->narrow(0, begin, count), x, tile_weight)
                                    : at::mm(x, tile_weight)).contiguous();
      const float* from = part.data_ptr<float>();
      for (int64_t i = 0; i < rows; ++i) std::memcpy(dst_out + i * n + begin, from + i * count, count * sizeof(float));
    }
  });
  return out;
}

at::Tensor linear(const at::Tensor& input, const at::Tensor& blocks, int64_t kind, int64_t k,
                  const std::optional<at::Tensor>& bias_or_none) {
  check(blocks, kind, k);
  TORCH_CHECK(input.scalar_type() == at::kFloat && input.size(-1) == k, "gguf_linear: input must be fp32 [..., ", k, "]");
  std::optional<at::Tensor> bias;
  if (bias_or_none && bias_or_none->defined()) {
    TORCH_CHECK(bias_or_none->scalar_type() == at::kFloat && bias_or_none->dim() == 1 &&
                bias_or_none->size(0) == blocks.size(0), "gguf_linear: bias must be fp32 [", blocks.size(0), "]");
    bias = bias_or_none->contiguous();
  }
  const Paths paths = paths_for(kind);
  const at::Tensor x = input.reshape({-1, k}).contiguous();
  const int64_t rows = x.size(0), n = blocks.size(0);
  if (rows > kBlasRows) return tiled(x, blocks, kind, k, paths, bias);
  at::Tensor out = at::empty({rows, n}, x.options());
  const float* xp = x.data_ptr<float>();
  const uint8_t* bp = blocks.data_ptr<uint8_t>();
  float* op = out.data_ptr<float>();
  const int64_t row_bytes = blocks.size(1);
  at::parallel_for(0, n, 16, [&](int64_t begin, int64_t end) {
    paths.run_rows(xp, rows, k, bp, row_bytes, op, n, begin, end);
  });
  if (bias) out.add_(*bias);
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
  m.def("gguf_linear(Tensor input, Tensor blocks, int kind, int k, Tensor? bias=None) -> Tensor", &linear);
  m.def("gguf_dequantize(Tensor blocks, int kind, int k) -> Tensor", &dequantize);
  m.def("gguf_kernel_path() -> str", &path);
}
