/* The one elementwise pass C still pays for (docs/c-passes.md: at least 1.3x faster than the best
 * PyTorch form measured, torch.compile included): gla's log decay gate and its backward, one pass over
 * memory where eager PyTorch takes several. */
#include "attnlab_cpu.h"

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
