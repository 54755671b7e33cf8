/* What every C file of attnlab's CPU kernels shares: the includes, the index type, the small inline
 * helpers (exponentials, sigmoid, dot product, prefetch, the thread index) and the matrix-product
 * micro-kernel's prototypes (gemm.c). float32 throughout; arrays contiguous and row-major unless a
 * function says otherwise. Compiled together into one library by build.py. */
#ifndef ATTNLAB_CPU_H
#define ATTNLAB_CPU_H

#include <stdint.h>
#include <string.h>
#ifdef __AVX512F__
#include <immintrin.h>
#endif
#ifdef _OPENMP
#include <omp.h>
#endif

typedef int64_t i64;

/* exp(x) for x <= 0: Cody-Waite reduction x = n ln2 + r, |r| <= ln2/2, a degree-7 Taylor series for
 * e^r (truncation < 3e-9), times 2^n from the exponent bits. Within 2 ulp of expf down to
 * x = -87; below, 2^-126 (1.2e-38) instead of a subnormal or 0; NaN stays NaN. Written to vectorise. */
static inline float exp_nonpositive(float x) {
    const float log2e = 1.44269504088896341f, ln2_hi = 0.693145751953125f, ln2_lo = 1.428606765330187e-06f;
    x = x < -87.3f ? -87.3f : x;
    float n = __builtin_rintf(x * log2e);
    float r = x - n * ln2_hi;
    r = r - n * ln2_lo;
    float p = 1.0f / 5040.0f;
    p = p * r + 1.0f / 720.0f;
    p = p * r + 1.0f / 120.0f;
    p = p * r + 1.0f / 24.0f;
    p = p * r + 1.0f / 6.0f;
    p = p * r + 0.5f;
    p = p * r + 1.0f;
    p = p * r + 1.0f;
    int32_t bits = ((int32_t)(n == n ? n : 0.0f) + 127) << 23; /* NaN: p carries it */
    float scale;
    memcpy(&scale, &bits, sizeof scale);
    return p * scale;
}

/* e^x (x <= 0, as exp_nonpositive) with values below `flush` set to exactly 0 (ops/decay.py flushed_exp:
 * such decays are far under fp32's resolution, and as subnormals x86 computes with them in microcode). */
static inline float flushed_exp(float x, float flush) {
    float e = exp_nonpositive(x);
    return e < flush ? 0.0f : e;
}

/* sigmoid(x) = 1 / (1 + e^-x), from exp_nonpositive(-|x|) (vectorises; within a few ulp of 1/(1+expf)). */
static inline float sigmoid(float x) {
    float e = exp_nonpositive(x > 0.0f ? -x : x);
    float inv = 1.0f / (1.0f + e);
    return x > 0.0f ? inv : e * inv;
}

/* Ask for n floats from p into the cache ahead of their use (the chunk loops below are otherwise
 * bound by waiting on memory: their products are small, their operands new each chunk). */
static inline void prefetch(const float *p, i64 n) {
    for (i64 x = 0; x < n; x += 16) __builtin_prefetch(p + x, 0, 3);
}

static inline float dot(const float *x, const float *y, i64 n) {
    float s = 0.0f;
#pragma omp simd reduction(+ : s)
    for (i64 i = 0; i < n; i++) s += x[i] * y[i];
    return s;
}

/* Which thread of a parallel loop this is (0 without OpenMP): a row of working memory each. */
static inline i64 thread_index(void) {
#ifdef _OPENMP
    return omp_get_thread_num();
#else
    return 0;
#endif
}

/* Based's 2nd-order Taylor features of d dimensions: 1 + d + d(d+1)/2 (based.c). */
#define TAYLOR_FEATURES(d) (1 + (d) + (d) * ((d) + 1) / 2)

/* The small matrix products of the chunk loops (gemm.c). Hidden: shared between the files, not exported. */
#define ATTNLAB_INTERNAL __attribute__((visibility("hidden")))
ATTNLAB_INTERNAL void accumulate_rows(const float *A, i64 rs, i64 cs, const float *B, i64 ldb, float *out, i64 ldo,
                                      i64 m, i64 k, i64 n, float alpha);
ATTNLAB_INTERNAL void transpose(const float *src, float *dst, i64 m, i64 n);
ATTNLAB_INTERNAL void product_rows(const float *A, i64 rs, i64 cs, const float *B, i64 ldb, float *out, i64 m, i64 k,
                                   i64 n, float alpha);

#endif
