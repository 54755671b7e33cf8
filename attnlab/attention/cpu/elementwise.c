/* The elementwise passes, each one pass over memory where eager PyTorch takes two or three (every pass
 * is a full read and write of an (N, d)-sized tensor, and memory traffic is what such passes cost):
 * causal linear attention's feature map, mask, normaliser and their gradients (ops/linear/chunk.py),
 * the prefix-sum scan, Based's Taylor feature map, the recurrent family's normalisations (ops/norms.py)
 * and gla's log decay gate, each with its backward. */
#include "attnlab_cpu.h"

/* phi = elu(x) + 1 = exp(min(x, 0)) + max(x, 0), n elements (NaN in, NaN out, as F.elu). */
void elu_plus_one(const float *x, float *phi, i64 n) {
#pragma omp parallel for simd schedule(static)
    for (i64 i = 0; i < n; i++) {
        float v = x[i];
        float neg = v > 0.0f ? 0.0f : v, pos = v > 0.0f ? v : 0.0f;
        phi[i] = exp_nonpositive(neg) + pos;
    }
}

/* scores (G, C, C) in place: entries above the diagonal set to 0; rowsum (G, C) = each row's sum. */
void tril_rowsum(float *scores, float *rowsum, i64 G, i64 C) {
#pragma omp parallel for schedule(static)
    for (i64 g = 0; g < G; g++) {
        for (i64 i = 0; i < C; i++) {
            float *row = scores + (g * C + i) * C;
            float sum = 0.0f;
#pragma omp simd reduction(+ : sum)
            for (i64 j = 0; j <= i; j++) sum += row[j];
            for (i64 j = i + 1; j < C; j++) row[j] = 0.0f;
            rowsum[g * C + i] = sum;
        }
    }
}

/* den (G, C) = q (G, C, D) . zk (G, D) + rowsum (G, C) + eps, then out (G, C, Dv) /= den. */
void normalize(float *out, float *den, const float *q, const float *zk, const float *rowsum, float eps, i64 G,
               i64 C, i64 D, i64 Dv) {
#pragma omp parallel for schedule(static)
    for (i64 g = 0; g < G; g++) {
        const float *z = zk + g * D;
        for (i64 i = 0; i < C; i++) {
            i64 row = g * C + i;
            const float *qi = q + row * D;
            float dot = 0.0f;
#pragma omp simd reduction(+ : dot)
            for (i64 d = 0; d < D; d++) dot += qi[d] * z[d];
            float total = dot + rowsum[row] + eps;
            den[row] = total;
            float inv = 1.0f / total;
            float *o = out + row * Dv;
#pragma omp simd
            for (i64 v = 0; v < Dv; v++) o[v] *= inv;
        }
    }
}

/* grad_num (R, Dv) = grad / den; grad_den (R) = -sum_v grad_num * out  (R = G*C rows). */
void grad_prologue(const float *grad, const float *den, const float *out, float *grad_num, float *grad_den,
                   i64 R, i64 Dv) {
#pragma omp parallel for schedule(static)
    for (i64 row = 0; row < R; row++) {
        float inv = 1.0f / den[row];
        const float *gr = grad + row * Dv, *o = out + row * Dv;
        float *gn = grad_num + row * Dv;
        float dot = 0.0f;
#pragma omp simd reduction(+ : dot)
        for (i64 v = 0; v < Dv; v++) {
            float x = gr[v] * inv;
            gn[v] = x;
            dot += x * o[v];
        }
        grad_den[row] = -dot;
    }
}

/* dscores (G, C, C) in place: + grad_den (G, C) of the row on and below the diagonal, 0 above. */
void add_rows_tril(float *dscores, const float *grad_den, i64 G, i64 C) {
#pragma omp parallel for schedule(static)
    for (i64 g = 0; g < G; g++) {
        for (i64 i = 0; i < C; i++) {
            float *row = dscores + (g * C + i) * C;
            float add = grad_den[g * C + i];
#pragma omp simd
            for (i64 j = 0; j <= i; j++) row[j] += add;
            for (i64 j = i + 1; j < C; j++) row[j] = 0.0f;
        }
    }
}

/* x (G, C, D) in place: += scale (G, C; NULL: 1) times vec (G, D; NULL: no term), then times the feature
 * map's derivative read off phi (G, C, D): feature_map 0 none, 1 elu+1 (min(phi, 1)), 2 relu (phi > 0). */
void feature_grad(float *x, const float *scale, const float *vec, const float *phi, int feature_map, i64 G,
                  i64 C, i64 D) {
#pragma omp parallel for schedule(static)
    for (i64 g = 0; g < G; g++) {
        for (i64 i = 0; i < C; i++) {
            i64 row = g * C + i;
            float s = scale ? scale[row] : 1.0f;
            float *xr = x + row * D;
            const float *p = phi + row * D, *w = vec ? vec + g * D : 0;
            if (w) {
#pragma omp simd
                for (i64 d = 0; d < D; d++) xr[d] += s * w[d];
            }
            if (feature_map == 1) {
#pragma omp simd
                for (i64 d = 0; d < D; d++) xr[d] *= p[d] > 1.0f ? 1.0f : p[d]; /* NaN kept, as clamp */
            } else if (feature_map == 2) {
#pragma omp simd
                for (i64 d = 0; d < D; d++) xr[d] = p[d] <= 0.0f ? 0.0f : xr[d]; /* as masked_fill */
            }
        }
    }
}

/* x (H, n, E) in place: x[h, i] <- sum over j <= i of x[h, j] (reverse: j >= i). Each thread walks a
 * block of columns down the sequence: one read and one write per element. */
void inclusive_scan(float *x, i64 H, i64 n, i64 E, int reverse) {
    const i64 block = 256, blocks = (E + block - 1) / block;
#pragma omp parallel for schedule(static)
    for (i64 task = 0; task < H * blocks; task++) {
        i64 h = task / blocks, lo = (task % blocks) * block, hi = lo + block < E ? lo + block : E;
        float *base = x + h * n * E;
        for (i64 step = 1; step < n; step++) {
            i64 i = reverse ? n - 1 - step : step, prev = reverse ? i + 1 : i - 1;
            float *row = base + i * E;
            const float *before = base + prev * E;
#pragma omp simd
            for (i64 e = lo; e < hi; e++) row[e] += before[e];
        }
    }
}

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


/* The recurrent family's per-vector normalisations (ops/norms.py), R rows of D.
 * unit_norm: y = f(x) / max(|f(x)|, eps), f = SiLU (silu != 0) or the identity; norm (R) = max(|f(x)|, eps),
 * with norm = -max(...) flagging a row whose |f(x)| was below eps (no projection in its backward). */
void unit_norm(const float *x, float *y, float *norm, int silu, float eps, i64 R, i64 D) {
#pragma omp parallel for schedule(static)
    for (i64 r = 0; r < R; r++) {
        const float *xr = x + r * D;
        float *yr = y + r * D, sq = 0.0f;
#pragma omp simd reduction(+ : sq)
        for (i64 d = 0; d < D; d++) {
            float s = silu ? xr[d] * sigmoid(xr[d]) : xr[d];
            yr[d] = s;
            sq += s * s;
        }
        float n = __builtin_sqrtf(sq);
        int clamped = n < eps;
        n = clamped ? eps : n;
        float inv = 1.0f / n;
#pragma omp simd
        for (i64 d = 0; d < D; d++) yr[d] *= inv;
        norm[r] = clamped ? -n : n;
    }
}

/* Its backward: dx = silu'(x) (dy - y (y.dy)) / norm (no projection in flagged rows). */
void unit_norm_backward(const float *dy, const float *x, const float *y, const float *norm, float *dx, int silu,
                        i64 R, i64 D) {
#pragma omp parallel for schedule(static)
    for (i64 r = 0; r < R; r++) {
        const float *g = dy + r * D, *yr = y + r * D, *xr = x + r * D;
        float *out = dx + r * D, along = 0.0f, n = norm[r];
        if (n > 0.0f) {
#pragma omp simd reduction(+ : along)
            for (i64 d = 0; d < D; d++) along += yr[d] * g[d];
        } else {
            n = -n;
        }
        float inv = 1.0f / n;
#pragma omp simd
        for (i64 d = 0; d < D; d++) {
            float ds = (g[d] - yr[d] * along) * inv;
            if (silu) {
                float sig = sigmoid(xr[d]);
                ds *= sig * (1.0f + xr[d] * (1.0f - sig));
            }
            out[d] = ds;
        }
    }
}

/* rms_norm: y = x r, r (R) = 1 / sqrt(mean(x^2) + eps). */
void rms_norm(const float *x, float *y, float *r_out, float eps, i64 R, i64 D) {
#pragma omp parallel for schedule(static)
    for (i64 r = 0; r < R; r++) {
        const float *xr = x + r * D;
        float *yr = y + r * D, sq = 0.0f;
#pragma omp simd reduction(+ : sq)
        for (i64 d = 0; d < D; d++) sq += xr[d] * xr[d];
        float s = 1.0f / __builtin_sqrtf(sq / (float)D + eps);
#pragma omp simd
        for (i64 d = 0; d < D; d++) yr[d] = xr[d] * s;
        r_out[r] = s;
    }
}

/* Its backward: dx = r (dy - y mean(dy.y)). */
void rms_norm_backward(const float *dy, const float *y, const float *r_in, float *dx, i64 R, i64 D) {
#pragma omp parallel for schedule(static)
    for (i64 r = 0; r < R; r++) {
        const float *g = dy + r * D, *yr = y + r * D;
        float *out = dx + r * D, along = 0.0f, s = r_in[r];
#pragma omp simd reduction(+ : along)
        for (i64 d = 0; d < D; d++) along += g[d] * yr[d];
        along /= (float)D;
#pragma omp simd
        for (i64 d = 0; d < D; d++) out[d] = s * (g[d] - yr[d] * along);
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
