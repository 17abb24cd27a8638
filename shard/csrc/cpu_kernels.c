/* sluice's CPU kernels, compiled at shard start by shard/models/cpu_kernels.py
 * (gcc -O3 -march=native -fopenmp) and called through ctypes on torch tensors' memory.
 *
 * decode_attention: one decode token per request attends over its own slot of the KV
 * cache, in one parallel pass over every (token, kv head) pair. torch's SDPA over a
 * padded, masked view costs 3-4x more here because each pair is a tiny GEMM with its own
 * setup. Each pair's result depends only on its own row, so batching never changes it.
 * Accumulation is in fp32 whatever the storage type.
 *
 * rope_write, add_rms_norm, silu_mul: a decoder layer's element-wise steps, fused (below).
 */
#ifndef __AVX512F__
#error "sluice's CPU kernels need AVX-512; the shard falls back to torch's ops"
#endif
#include <immintrin.h>
#include <math.h>
#include <omp.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define MAX_GROUP 16
#define MAX_HEAD_DIM 256
#define PREFETCH_ROWS 8

static inline __m512 load16_bf16(const uint16_t *p) {
    return _mm512_castsi512_ps(_mm512_slli_epi32(
        _mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i *)p)), 16));
}
static inline __m512 load16_f32(const float *p) { return _mm512_loadu_ps(p); }

static inline uint16_t f32_to_bf16(float f) {   /* round to nearest even, as torch does */
    union { uint32_t u; float f; } v; v.f = f;
    if ((v.u & 0x7fffffff) > 0x7f800000) return (uint16_t)((v.u >> 16) | 64);
    v.u += 0x7fff + ((v.u >> 16) & 1);
    return (uint16_t)(v.u >> 16);
}
static inline float bf16_to_f32(uint16_t h) {
    union { uint32_t u; float f; } v; v.u = (uint32_t)h << 16; return v.f;
}
static inline float ident(float x) { return x; }

/* exp(x), vectorised: 2^n * p(r), |error| ~1 ulp; 0 below -87, inf above ~88. */
static inline __m512 exp16(__m512 x) {
    x = _mm512_max_ps(x, _mm512_set1_ps(-87.f));
    __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504f)), 0);
    __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693359375f), x);
    r = _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.12194440e-4f), r);
    __m512 p = _mm512_set1_ps(1.9875691500e-4f);
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.3981999507e-3f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(8.3334519073e-3f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(4.1665795894e-2f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.6666665459e-1f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(5.0000001201e-1f));
    p = _mm512_fmadd_ps(_mm512_mul_ps(p, r), r, _mm512_add_ps(r, _mm512_set1_ps(1.f)));
    return _mm512_scalef_ps(p, n);
}

/* Round 16 floats to bfloat16 precision (nearest even), kept as floats. */
static inline __m512 round16_bf16(__m512 x) {
    __m512i u = _mm512_castps_si512(x);
    const __m512i lsb = _mm512_and_si512(_mm512_srli_epi32(u, 16), _mm512_set1_epi32(1));
    u = _mm512_add_epi32(u, _mm512_add_epi32(lsb, _mm512_set1_epi32(0x7fff)));
    return _mm512_castsi512_ps(_mm512_and_si512(u, _mm512_set1_epi32((int)0xffff0000)));
}
static inline __m512 round16_none(__m512 x) { return x; }
static inline void store16_bf16(uint16_t *p, __m512 x) {
    const __m512i u = _mm512_srli_epi32(_mm512_castps_si512(round16_bf16(x)), 16);
    _mm256_storeu_si256((__m256i *)p, _mm512_cvtepi32_epi16(u));
}
static inline void store16_f32(float *p, __m512 x) { _mm512_storeu_ps(p, x); }

static void softmax_rows(float *scores, int64_t group, int64_t len, int64_t stride) {
    for (int64_t g = 0; g < group; g++) {
        float *s = scores + g * stride, top = -INFINITY;
        for (int64_t t = 0; t < len; t++) top = s[t] > top ? s[t] : top;
        __m512 sum = _mm512_setzero_ps(), vtop = _mm512_set1_ps(top);
        for (int64_t t = 0; t < stride; t += 16) {   /* stride: len rounded up to 16 */
            __mmask16 m = len - t >= 16 ? 0xffff : (__mmask16)((1u << (len - t)) - 1);
            __m512 e = _mm512_maskz_mov_ps(m, exp16(_mm512_sub_ps(_mm512_loadu_ps(s + t), vtop)));
            _mm512_storeu_ps(s + t, e);
            sum = _mm512_add_ps(sum, e);
        }
        const __m512 inv = _mm512_set1_ps(1.f / _mm512_reduce_add_ps(sum));
        for (int64_t t = 0; t < stride; t += 16)
            _mm512_storeu_ps(s + t, _mm512_mul_ps(_mm512_loadu_ps(s + t), inv));
    }
}

#define DEFINE_DECODE(NAME, T, LOAD16, TO_F32, FROM_F32)                                     \
void NAME(const T *q, const T *keys, const T *values, T *out, const int64_t *slots,          \
          const int64_t *lengths, int64_t num_tokens, int64_t num_heads, int64_t num_kv_heads, \
          int64_t head_dim, int64_t slot_stride, int64_t head_stride, float scale) {          \
    const int64_t group = num_heads / num_kv_heads, vecs = head_dim / 16;                     \
    _Pragma("omp parallel for schedule(dynamic, 1)")                                          \
    for (int64_t task = 0; task < num_tokens * num_kv_heads; task++) {                        \
        const int64_t n = task / num_kv_heads, h = task % num_kv_heads, len = lengths[n];     \
        const int64_t stride = (len + 15) / 16 * 16;                                          \
        const T *k = keys + slots[n] * slot_stride + h * head_stride;                         \
        const T *v = values + slots[n] * slot_stride + h * head_stride;                       \
        const T *qh = q + (n * num_heads + h * group) * head_dim;                             \
        __m512 qv[MAX_GROUP][MAX_HEAD_DIM / 16], acc[MAX_GROUP][MAX_HEAD_DIM / 16];           \
        float *scores = aligned_alloc(64, sizeof(float) * group * stride);                    \
        for (int64_t g = 0; g < group; g++)                                                   \
            for (int64_t i = 0; i < vecs; i++)                                                \
                qv[g][i] = _mm512_mul_ps(LOAD16(qh + g * head_dim + 16 * i),                  \
                                         _mm512_set1_ps(scale));                              \
        for (int64_t t = 0; t < len; t++) {                                                   \
            __m512 kv[MAX_HEAD_DIM / 16];                                                     \
            /* Cold cache rows: ask for the next keys and this row's values early. */         \
            for (int64_t b = 0; b < (int64_t)sizeof(T) * head_dim; b += 64) {                 \
                _mm_prefetch((const char *)(k + (t + PREFETCH_ROWS) * head_dim) + b, _MM_HINT_T0); \
                _mm_prefetch((const char *)(v + t * head_dim) + b, _MM_HINT_T0);              \
            }                                                                                 \
            for (int64_t i = 0; i < vecs; i++) kv[i] = LOAD16(k + t * head_dim + 16 * i);     \
            for (int64_t g = 0; g < group; g++) {                                             \
                __m512 s = _mm512_mul_ps(qv[g][0], kv[0]);                                    \
                for (int64_t i = 1; i < vecs; i++) s = _mm512_fmadd_ps(qv[g][i], kv[i], s);   \
                scores[g * stride + t] = _mm512_reduce_add_ps(s);                             \
            }                                                                                 \
        }                                                                                     \
        softmax_rows(scores, group, len, stride);                                             \
        for (int64_t g = 0; g < group; g++)                                                   \
            for (int64_t i = 0; i < vecs; i++) acc[g][i] = _mm512_setzero_ps();               \
        for (int64_t t = 0; t < len; t++) {                                                   \
            __m512 vv[MAX_HEAD_DIM / 16];                                                     \
            for (int64_t i = 0; i < vecs; i++) vv[i] = LOAD16(v + t * head_dim + 16 * i);     \
            for (int64_t g = 0; g < group; g++) {                                             \
                const __m512 p = _mm512_set1_ps(scores[g * stride + t]);                      \
                for (int64_t i = 0; i < vecs; i++) acc[g][i] = _mm512_fmadd_ps(p, vv[i], acc[g][i]); \
            }                                                                                 \
        }                                                                                     \
        T *o = out + (n * num_heads + h * group) * head_dim;                                  \
        for (int64_t g = 0; g < group; g++)                                                   \
            for (int64_t i = 0; i < vecs; i++) {                                              \
                float tmp[16];                                                                \
                _mm512_storeu_ps(tmp, acc[g][i]);                                             \
                for (int j = 0; j < 16; j++) o[g * head_dim + 16 * i + j] = FROM_F32(tmp[j]); \
            }                                                                                 \
        free(scores);                                                                         \
    }                                                                                         \
}

DEFINE_DECODE(decode_attention_bf16, uint16_t, load16_bf16, bf16_to_f32, f32_to_bf16)
DEFINE_DECODE(decode_attention_f32, float, load16_f32, ident, ident)

/* Element-wise kernels: each fuses what torch runs as 3-6 separate ops (each its own
 * parallel region and pass over memory). In bfloat16 every step rounds to bfloat16 as
 * torch's own ops do, so rotary and the KV write are bit-identical to the torch path. */
#define R(x) round_bf16(x)
static inline float round_bf16(float x) { return bf16_to_f32(f32_to_bf16(x)); }

/* Rotary on one head: out = x * cos + rotate_half(x) * sin. */
#define DEFINE_ROTATE(NAME, T, TO_F32, FROM_F32, ROUND)                                      \
static inline void NAME(const T *x, const T *cos, const T *sin, T *out, int64_t dim) {      \
    const int64_t half = dim / 2;                                                            \
    for (int64_t i = 0; i < dim; i++) {                                                      \
        const float rotated = i < half ? -TO_F32(x[i + half]) : TO_F32(x[i - half]);         \
        out[i] = FROM_F32(ROUND(ROUND(TO_F32(x[i]) * TO_F32(cos[i]))                         \
                                + ROUND(rotated * TO_F32(sin[i]))));                         \
    }                                                                                        \
}
DEFINE_ROTATE(rotate_bf16, uint16_t, bf16_to_f32, f32_to_bf16, R)
DEFINE_ROTATE(rotate_f32, float, ident, ident, ident)

/* qkv: [tokens, (heads + 2 kv heads) * dim]. Writes rotated q to q_out [tokens, heads, dim],
 * rotated k and plain v to the cache at (slots[t], kv head, positions[t]). */
#define DEFINE_ROPE_WRITE(NAME, T, ROTATE)                                                   \
void NAME(const T *qkv, const T *cos, const T *sin, T *q_out, T *keys, T *values,           \
          const int64_t *slots, const int64_t *positions, int64_t num_tokens,               \
          int64_t num_heads, int64_t num_kv_heads, int64_t head_dim, int64_t slot_stride,    \
          int64_t head_stride) {                                                             \
    const int64_t width = (num_heads + 2 * num_kv_heads) * head_dim;                         \
    _Pragma("omp parallel for if (num_tokens > 1)")                                          \
    for (int64_t t = 0; t < num_tokens; t++) {                                               \
        const T *row = qkv + t * width, *c = cos + t * head_dim, *s = sin + t * head_dim;    \
        for (int64_t h = 0; h < num_heads; h++)                                              \
            ROTATE(row + h * head_dim, c, s, q_out + (t * num_heads + h) * head_dim, head_dim); \
        const int64_t base = slots[t] * slot_stride + positions[t] * head_dim;               \
        for (int64_t h = 0; h < num_kv_heads; h++) {                                         \
            ROTATE(row + (num_heads + h) * head_dim, c, s, keys + base + h * head_stride,    \
                   head_dim);                                                                \
            memcpy(values + base + h * head_stride,                                          \
                   row + (num_heads + num_kv_heads + h) * head_dim, sizeof(T) * head_dim);   \
        }                                                                                    \
    }                                                                                        \
}
DEFINE_ROPE_WRITE(rope_write_bf16, uint16_t, rotate_bf16)
DEFINE_ROPE_WRITE(rope_write_f32, float, rotate_f32)

/* hidden += delta (when delta is given), then out = rms_norm(hidden) * weight.
 * width must be a multiple of 16. */
#define DEFINE_ADD_RMS_NORM(NAME, T, LOAD16, STORE16, ROUND16)                               \
void NAME(T *hidden, const T *delta, const T *weight, T *out, int64_t num_tokens,            \
          int64_t width, float eps) {                                                        \
    _Pragma("omp parallel for if (num_tokens > 1)")                                          \
    for (int64_t t = 0; t < num_tokens; t++) {                                               \
        T *h = hidden + t * width;                                                           \
        __m512 sum = _mm512_setzero_ps();                                                    \
        for (int64_t i = 0; i < width; i += 16) {                                            \
            __m512 x = LOAD16(h + i);                                                        \
            if (delta) {                                                                     \
                x = ROUND16(_mm512_add_ps(x, LOAD16(delta + t * width + i)));                \
                STORE16(h + i, x);                                                           \
            }                                                                                \
            sum = _mm512_add_ps(sum, _mm512_mul_ps(x, x));                                   \
        }                                                                                    \
        const __m512 rstd = _mm512_set1_ps(                                                  \
            1.f / sqrtf(_mm512_reduce_add_ps(sum) / (float)width + eps));                    \
        for (int64_t i = 0; i < width; i += 16)                                              \
            STORE16(out + t * width + i, _mm512_mul_ps(                                      \
                ROUND16(_mm512_mul_ps(LOAD16(h + i), rstd)), LOAD16(weight + i)));           \
    }                                                                                        \
}
DEFINE_ADD_RMS_NORM(add_rms_norm_bf16, uint16_t, load16_bf16, store16_bf16, round16_bf16)
DEFINE_ADD_RMS_NORM(add_rms_norm_f32, float, load16_f32, store16_f32, round16_none)

/* gate_up: [tokens, 2 * width] -> out: [tokens, width] = silu(gate) * up.
 * width must be a multiple of 16. */
#define DEFINE_SILU_MUL(NAME, T, LOAD16, STORE16, ROUND16)                                   \
void NAME(const T *gate_up, T *out, int64_t num_tokens, int64_t width) {                     \
    _Pragma("omp parallel for if (num_tokens > 1)")                                          \
    for (int64_t t = 0; t < num_tokens; t++) {                                               \
        const T *gate = gate_up + t * 2 * width, *up = gate + width;                         \
        for (int64_t i = 0; i < width; i += 16) {                                            \
            const __m512 g = LOAD16(gate + i);                                               \
            const __m512 e = exp16(_mm512_sub_ps(_mm512_setzero_ps(), g));                   \
            const __m512 silu = _mm512_div_ps(g, _mm512_add_ps(_mm512_set1_ps(1.f), e));     \
            STORE16(out + t * width + i, _mm512_mul_ps(ROUND16(silu), LOAD16(up + i)));     \
        }                                                                                    \
    }                                                                                        \
}
DEFINE_SILU_MUL(silu_mul_bf16, uint16_t, load16_bf16, store16_bf16, round16_bf16)
DEFINE_SILU_MUL(silu_mul_f32, float, load16_f32, store16_f32, round16_none)

/* Greedy choice with its logprob, per row of logits [rows, vocab]: the first index of the
 * largest logit, and -log(sum(exp(logit - max))). Two passes over the row, no softmax matrix. */
#define DEFINE_GREEDY(NAME, T, LOAD16, TO_F32)                                               \
void NAME(const T *logits, int64_t num_rows, int64_t vocab, int64_t *token_ids,             \
          float *logprobs) {                                                                 \
    _Pragma("omp parallel for if (num_rows > 1)")                                            \
    for (int64_t r = 0; r < num_rows; r++) {                                                 \
        const T *row = logits + r * vocab;                                                   \
        const int64_t whole = vocab / 16 * 16;                                               \
        __m512 vmax = _mm512_set1_ps(-INFINITY);                                             \
        for (int64_t i = 0; i < whole; i += 16) vmax = _mm512_max_ps(vmax, LOAD16(row + i));  \
        float top = _mm512_reduce_max_ps(vmax);                                              \
        for (int64_t i = whole; i < vocab; i++) top = TO_F32(row[i]) > top ? TO_F32(row[i]) : top; \
        const __m512 vtop = _mm512_set1_ps(top);                                             \
        __m512 sum = _mm512_setzero_ps();                                                    \
        int64_t best = -1;                                                                   \
        for (int64_t i = 0; i < whole; i += 16) {                                            \
            const __m512 x = LOAD16(row + i);                                                \
            if (best < 0) {                                                                  \
                const __mmask16 hit = _mm512_cmp_ps_mask(x, vtop, _CMP_EQ_OQ);               \
                if (hit) best = i + __builtin_ctz(hit);                                      \
            }                                                                                \
            sum = _mm512_add_ps(sum, exp16(_mm512_sub_ps(x, vtop)));                         \
        }                                                                                    \
        float total = _mm512_reduce_add_ps(sum);                                             \
        for (int64_t i = whole; i < vocab; i++) {                                            \
            if (best < 0 && TO_F32(row[i]) == top) best = i;                                 \
            total += expf(TO_F32(row[i]) - top);                                             \
        }                                                                                    \
        token_ids[r] = best < 0 ? 0 : best;                                                  \
        logprobs[r] = -logf(total);                                                          \
    }                                                                                        \
}
DEFINE_GREEDY(greedy_bf16, uint16_t, load16_bf16, bf16_to_f32)
DEFINE_GREEDY(greedy_f32, float, load16_f32, ident)

/* out[m, n] = sum_g scales[n, g] * sum_{i in group g} x[m, i] * q[n, i], for a few rows of x:
 * an 8-bit weight with one scale per 32 inputs (GGUF's Q8_0, held exactly). One step with
 * few rows is bound by reading weights, and this reads half the bytes of bfloat16. */
#define Q8_MAX_ROWS 8
static inline __m512 load16_i8(const int8_t *p) {
    return _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)p)));
}
#define DEFINE_Q8_MATMUL(NAME, T, LOAD16, FROM_F32)                                          \
void NAME(const T *x, const int8_t *q, const float *scales, T *out, int64_t num_rows,        \
          int64_t in_features, int64_t out_features) {                                       \
    const int64_t groups = in_features / 32;                                                 \
    float *xf = aligned_alloc(64, sizeof(float) * Q8_MAX_ROWS * in_features);               \
    for (int64_t m = 0; m < num_rows; m++)                                                   \
        for (int64_t i = 0; i < in_features; i += 16)                                        \
            _mm512_store_ps(xf + m * in_features + i, LOAD16(x + m * in_features + i));      \
    _Pragma("omp parallel for schedule(static)")                                             \
    for (int64_t n = 0; n < out_features; n++) {                                             \
        const int8_t *row = q + n * in_features;                                             \
        __m512 acc[Q8_MAX_ROWS];                                                             \
        for (int64_t m = 0; m < num_rows; m++) acc[m] = _mm512_setzero_ps();                 \
        for (int64_t g = 0; g < groups; g++) {                                               \
            const __m512 w0 = load16_i8(row + 32 * g), w1 = load16_i8(row + 32 * g + 16);    \
            const __m512 scale = _mm512_set1_ps(scales[n * groups + g]);                     \
            for (int64_t m = 0; m < num_rows; m++) {                                         \
                const float *xm = xf + m * in_features + 32 * g;                             \
                const __m512 part = _mm512_fmadd_ps(_mm512_load_ps(xm + 16), w1,            \
                                                    _mm512_mul_ps(_mm512_load_ps(xm), w0));  \
                acc[m] = _mm512_fmadd_ps(part, scale, acc[m]);                               \
            }                                                                                \
        }                                                                                    \
        for (int64_t m = 0; m < num_rows; m++)                                               \
            out[m * out_features + n] = FROM_F32(_mm512_reduce_add_ps(acc[m]));              \
    }                                                                                        \
    free(xf);                                                                                \
}
DEFINE_Q8_MATMUL(q8_matmul_bf16, uint16_t, load16_bf16, f32_to_bf16)
DEFINE_Q8_MATMUL(q8_matmul_f32, float, load16_f32, ident)

/* The team size of the calling thread's parallel regions (shard/threads.py resizes it). */
void set_num_threads(int64_t num_threads) { omp_set_num_threads((int)num_threads); }
