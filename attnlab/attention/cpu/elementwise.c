/* The elementwise passes C still pays for (docs/c-passes.md: each at least 1.3x faster than the best
 * PyTorch form measured, torch.compile included): Based's Taylor feature map and gla's log decay gate,
 * each with its backward, one pass over memory where eager PyTorch takes several. */
#include "attnlab_cpu.h"

/* Based's 2nd-order Taylor feature map (ops/based/chunk.py), R rows of d: phi (R, 1 + d + d(d+1)/2) =
 * [1, x, c_ab x_a x_b for a <= b], c_aa = 1/sqrt(2), c_ab = 1 otherwise. */
i64 taylor_feature_count(i64 d) { return TAYLOR_FEATURES(d); } /* for the Python side: written once */

void taylor_features(const float *x, float *phi, i64 R, i64 d) {
    const i64 F = 1 + d + d * (d + 1) / 2;
    const float half = 0.70710678118654752f;
#pragma omp parallel for schedule(static)
    for (i64 r = 0; r < R; r++) {
        const float *xr = x + r * d;
        float *p = phi + r * F;
        p[0] = 1.0f;
        for (i64 a = 0; a < d; a++) p[1 + a] = xr[a];
        p += 1 + d;
        for (i64 a = 0; a < d; a++) {
            float xa = xr[a];
#pragma omp simd
            for (i64 b = a; b < d; b++) p[b - a] = xa * xr[b];
            p[0] *= half;
            p += d - a;
        }
    }
}

/* Its backward: dx (R, d) = dphi's linear part + for each pair c_ab (dphi_ab x_b on a, dphi_ab x_a on b). */
void taylor_features_backward(const float *dphi, const float *x, float *dx, i64 R, i64 d) {
    const i64 F = 1 + d + d * (d + 1) / 2;
    const float root2 = 1.41421356237309505f;
#pragma omp parallel for schedule(static)
    for (i64 r = 0; r < R; r++) {
        const float *xr = x + r * d, *g = dphi + r * F + 1 + d;
        float *out = dx + r * d;
        for (i64 a = 0; a < d; a++) out[a] = dphi[r * F + 1 + a];
        for (i64 a = 0; a < d; a++) {
            float xa = xr[a], acc = root2 * g[0] * xa; /* d(x_a^2 / sqrt 2) / dx_a */
#pragma omp simd reduction(+ : acc)
            for (i64 b = a + 1; b < d; b++) {
                acc += g[b - a] * xr[b];
                out[b] += g[b - a] * xa;
            }
            out[a] += acc;
            g += d - a;
        }
    }
}

/* log(1 + e) for 0 <= e <= 1: 2 atanh(s), s = e / (2 + e) <= 1/3, as the odd series s + s^3/3 + ...
 * up to s^15/15 (truncation < 1.5e-8 relative). Written to vectorise. */
static inline float log1p_unit(float e) {
    float s = e / (2.0f + e), z = s * s;
    float p = 1.0f / 15.0f;
    p = p * z + 1.0f / 13.0f;
    p = p * z + 1.0f / 11.0f;
    p = p * z + 1.0f / 9.0f;
    p = p * z + 1.0f / 7.0f;
    p = p * z + 1.0f / 5.0f;
    p = p * z + 1.0f / 3.0f;
    p = p * z + 1.0f;
    return 2.0f * s * p;
}

/* logsigmoid(x) = min(x, 0) - log(1 + e^-|x|) (NaN in, NaN out). */
static inline float log_sigmoid(float x) {
    float e = exp_nonpositive(x > 0.0f ? -x : x);
    return (x < 0.0f ? x : 0.0f) - log1p_unit(e);
}

/* gla's log decay (attention/variants/gla.py LogDecayGate): y = max(logsigmoid(x) / temperature, floor), n elements. */
void log_decay_gate(const float *x, float *y, float temperature, float floor, i64 n) {
#pragma omp parallel for simd schedule(static)
    for (i64 i = 0; i < n; i++) {
        float v = log_sigmoid(x[i]) / temperature;
        y[i] = v < floor ? floor : v;
    }
}

/* Its backward: dx = grad sigmoid(-x) / temperature, 0 where the clamp held (logsigmoid(x) / temperature < floor). */
void log_decay_gate_backward(const float *grad, const float *x, float *dx, float temperature, float floor, i64 n) {
#pragma omp parallel for simd schedule(static)
    for (i64 i = 0; i < n; i++) {
        float v = x[i], d = grad[i] * sigmoid(-v) / temperature;
        dx[i] = log_sigmoid(v) / temperature < floor ? 0.0f : d;
    }
}
