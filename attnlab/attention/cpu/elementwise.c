/* Fused elementwise passes of the chunked causal linear-attention kernel (linear_kernels.py), float32.
 *
 * Each function does in one pass over memory what eager PyTorch does in two or three (a pass over a
 * 16 MB tensor costs about 1 ms on a 2-core CPU, there are about 20 of them per step at N=16K, and
 * the matrix products between them stay with PyTorch). Arrays are contiguous, row-major; G chunks
 * of C rows, D features, Dv value columns. Compiled and loaded at run time by linear_passes.py.
 */
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
 * x = -87; below, 2^-126 (1.2e-38) instead of a subnormal or 0; NaN stays NaN. Written to vectorise.
 * Also exact to 2 ulp for 0 < x <= 88 (2^n is still a normal float), where gla's in-chunk factors
 * e^{-b}, b >= -80, use it; beyond that the result is not e^x. */
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

/* phi = elu(x) + 1 = exp(min(x, 0)) + max(x, 0), n elements (NaN in, NaN out, as F.elu). */
/* e^x (x <= 88, as exp_nonpositive) with values below `flush` set to exactly 0 (ops/gated_linear.flushed_exp:
 * such decays are far under fp32's resolution, and as subnormals ~100x slower to compute with). */
static inline float flushed_exp(float x, float flush) {
    float e = exp_nonpositive(x);
    return e < flush ? 0.0f : e;
}

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

/* Based's 2nd-order Taylor feature map (ops/based.py), R rows of d: phi (R, 1 + d + d(d+1)/2) =
 * [1, x, c_ab x_a x_b for a <= b], c_aa = 1/sqrt(2), c_ab = 1 otherwise. */
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

/* sigmoid(x) = 1 / (1 + e^-x), from exp_nonpositive(-|x|) (vectorises; within a few ulp of 1/(1+expf)). */
static inline float sigmoid(float x) {
    float e = exp_nonpositive(x > 0.0f ? -x : x);
    float inv = 1.0f / (1.0f + e);
    return x > 0.0f ? inv : e * inv;
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

/* gla's log decay (attention/gla.py LogDecayGate): y = max(logsigmoid(x) / temperature, floor), n elements. */
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

/* The gated delta rule's in-chunk decays (ops/delta_rule.py), R chunks of C positions, b (R, C) the
 * cumulative log decay in each chunk. decay_matrix: gamma (R, C, C) = e^{b_i - b_j} for j <= i, 0 above
 * the diagonal, and 0 where below `flush` (as ops/gated_linear.flushed_exp). */
void decay_matrix(const float *b, float *gamma, float flush, i64 R, i64 C) {
#pragma omp parallel for schedule(static)
    for (i64 r = 0; r < R; r++) {
        const float *br = b + r * C;
        for (i64 i = 0; i < C; i++) {
            float *row = gamma + (r * C + i) * C, bi = br[i];
#pragma omp simd
            for (i64 j = 0; j < C; j++) row[j] = j > i ? 0.0f : flushed_exp(bi - br[j], flush);
        }
    }
}

/* flush_small: x[i] = 0 where |x[i]| < flush, in place, n elements. */
void flush_small(float *x, float flush, i64 n) {
#pragma omp parallel for simd schedule(static)
    for (i64 i = 0; i < n; i++) x[i] = __builtin_fabsf(x[i]) < flush ? 0.0f : x[i];
}

/* The delta rule's in-chunk scores, backward (R chunks of C x C): M = S_M ⊙ gamma (causal) and
 * P = diag(beta) K K^T ⊙ gamma (strictly lower), with Praw = K K^T ⊙ gamma as saved; gamma NULL: the
 * causal mask (ungated). In place: dM <- dM ⊙ gamma (the gradient of S_M); dP <- G + G^T with
 * G = diag(beta) dP ⊙ gamma (the gradient of K K^T, both of its factors at once). Writes d_beta (R, C)
 * = rows of dP ⊙ Praw, and, gated, db (R, C) = row sums minus column sums of E = dM ⊙ M + dP ⊙ P
 * (d loss / d (b_i - b_j) through gamma_ij). dP comes in strictly lower, zero elsewhere. */
void delta_scores_backward(float *dM, float *dP, const float *M, const float *Praw, const float *gamma,
                           const float *beta, float *db, float *d_beta, i64 R, i64 C) {
#pragma omp parallel for schedule(static)
    for (i64 r = 0; r < R; r++) {
        float *dbr = db ? db + r * C : NULL;
        if (dbr)
            for (i64 i = 0; i < C; i++) dbr[i] = 0.0f;
        for (i64 i = 0; i < C; i++) {
            i64 o = (r * C + i) * C;
            float bi = beta[r * C + i], row = 0.0f, sb = 0.0f;
            if (gamma) {
#pragma omp simd reduction(+ : row, sb)
                for (i64 j = 0; j <= i; j++) {
                    float p = dP[o + j] * Praw[o + j], e = dM[o + j] * M[o + j] + bi * p;
                    row += e;
                    sb += p;
                    dbr[j] -= e;
                    dM[o + j] *= gamma[o + j];
                    dP[o + j] *= bi * gamma[o + j];
                }
                dbr[i] += row;
            } else {
#pragma omp simd reduction(+ : sb)
                for (i64 j = 0; j < i; j++) {
                    sb += dP[o + j] * Praw[o + j];
                    dP[o + j] *= bi;
                }
            }
            for (i64 j = i + 1; j < C; j++) dM[o + j] = 0.0f;
            d_beta[r * C + i] = sb;
        }
        float *dPr = dP + r * C * C;
        for (i64 i = 1; i < C; i++) /* G + G^T: the upper triangle mirrors the lower one */
            for (i64 j = 0; j < i; j++) dPr[j * C + i] = dPr[i * C + j];
    }
}

/* out[i, :] += alpha sum_p A[i, p] B[p, :] for i < m, p < k, over n columns: A[i, p] = A[i*rs + p*cs]
 * (so a transposed operand is a stride swap), B and out row-major with row strides ldb, ldo. The small
 * products (C, D ~ 32-64) of the chunk loops below, where a library call per product costs more than
 * the product. With AVX-512: tiles of 4 rows x 64 columns whose 16 running sums stay in registers
 * (~145 GFLOP/s on one core with the operands in cache); elsewhere, and for the remainder, one row at
 * a time. */
static void accumulate_rows(const float *A, i64 rs, i64 cs, const float *B, i64 ldb, float *out, i64 ldo, i64 m,
                            i64 k, i64 n, float alpha) {
    i64 j0 = 0;
#ifdef __AVX512F__
    __m512 va = _mm512_set1_ps(alpha);
    for (; j0 + 64 <= n; j0 += 64) {
        i64 i = 0;
        for (; i + 4 <= m; i += 4) {
            __m512 c00 = _mm512_setzero_ps(), c01 = c00, c02 = c00, c03 = c00;
            __m512 c10 = c00, c11 = c00, c12 = c00, c13 = c00;
            __m512 c20 = c00, c21 = c00, c22 = c00, c23 = c00;
            __m512 c30 = c00, c31 = c00, c32 = c00, c33 = c00;
            const float *a = A + i * rs;
            for (i64 p = 0; p < k; p++) {
                const float *b = B + p * ldb + j0;
                __m512 b0 = _mm512_loadu_ps(b), b1 = _mm512_loadu_ps(b + 16), b2 = _mm512_loadu_ps(b + 32),
                       b3 = _mm512_loadu_ps(b + 48);
                const float *ap = a + p * cs;
                __m512 a0 = _mm512_set1_ps(ap[0]);
                c00 = _mm512_fmadd_ps(a0, b0, c00); c01 = _mm512_fmadd_ps(a0, b1, c01);
                c02 = _mm512_fmadd_ps(a0, b2, c02); c03 = _mm512_fmadd_ps(a0, b3, c03);
                __m512 a1 = _mm512_set1_ps(ap[rs]);
                c10 = _mm512_fmadd_ps(a1, b0, c10); c11 = _mm512_fmadd_ps(a1, b1, c11);
                c12 = _mm512_fmadd_ps(a1, b2, c12); c13 = _mm512_fmadd_ps(a1, b3, c13);
                __m512 a2 = _mm512_set1_ps(ap[2 * rs]);
                c20 = _mm512_fmadd_ps(a2, b0, c20); c21 = _mm512_fmadd_ps(a2, b1, c21);
                c22 = _mm512_fmadd_ps(a2, b2, c22); c23 = _mm512_fmadd_ps(a2, b3, c23);
                __m512 a3 = _mm512_set1_ps(ap[3 * rs]);
                c30 = _mm512_fmadd_ps(a3, b0, c30); c31 = _mm512_fmadd_ps(a3, b1, c31);
                c32 = _mm512_fmadd_ps(a3, b2, c32); c33 = _mm512_fmadd_ps(a3, b3, c33);
            }
#define STORE(r, q, acc) { float *o = out + (i + r) * ldo + j0 + 16 * q; _mm512_storeu_ps(o, _mm512_fmadd_ps(va, acc, _mm512_loadu_ps(o))); }
            STORE(0,0,c00) STORE(0,1,c01) STORE(0,2,c02) STORE(0,3,c03)
            STORE(1,0,c10) STORE(1,1,c11) STORE(1,2,c12) STORE(1,3,c13)
            STORE(2,0,c20) STORE(2,1,c21) STORE(2,2,c22) STORE(2,3,c23)
            STORE(3,0,c30) STORE(3,1,c31) STORE(3,2,c32) STORE(3,3,c33)
#undef STORE
        }
        for (; i < m; i++) {
            __m512 c0 = _mm512_setzero_ps(), c1 = c0, c2 = c0, c3 = c0;
            for (i64 p = 0; p < k; p++) {
                const float *b = B + p * ldb + j0;
                __m512 a0 = _mm512_set1_ps(A[i * rs + p * cs]);
                c0 = _mm512_fmadd_ps(a0, _mm512_loadu_ps(b), c0); c1 = _mm512_fmadd_ps(a0, _mm512_loadu_ps(b + 16), c1);
                c2 = _mm512_fmadd_ps(a0, _mm512_loadu_ps(b + 32), c2); c3 = _mm512_fmadd_ps(a0, _mm512_loadu_ps(b + 48), c3);
            }
            float *o = out + i * ldo + j0;
            _mm512_storeu_ps(o, _mm512_fmadd_ps(va, c0, _mm512_loadu_ps(o)));
            _mm512_storeu_ps(o + 16, _mm512_fmadd_ps(va, c1, _mm512_loadu_ps(o + 16)));
            _mm512_storeu_ps(o + 32, _mm512_fmadd_ps(va, c2, _mm512_loadu_ps(o + 32)));
            _mm512_storeu_ps(o + 48, _mm512_fmadd_ps(va, c3, _mm512_loadu_ps(o + 48)));
        }
    }
#endif
    for (; j0 < n; j0 += 64) { /* portable: 64 columns (or fewer) at a time, one row */
        i64 nb = n - j0 < 64 ? n - j0 : 64;
        for (i64 i = 0; i < m; i++) {
            float acc[64];
            for (i64 j = 0; j < nb; j++) acc[j] = 0.0f;
            for (i64 p = 0; p < k; p++) {
                float a = A[i * rs + p * cs];
                const float *b = B + p * ldb + j0;
#pragma omp simd
                for (i64 j = 0; j < nb; j++) acc[j] += a * b[j];
            }
            float *o = out + i * ldo + j0;
            for (i64 j = 0; j < nb; j++) o[j] += alpha * acc[j];
        }
    }
}

#ifdef __AVX512F__
/* dst (16 rows, stride ldd) = the transpose of src (16 rows, stride lds): a 16 x 16 block in registers,
 * pairs, then quadruples interleaved within 128-bit lanes, then the lanes exchanged twice. */
static void transpose_block16(const float *src, i64 lds, float *dst, i64 ldd) {
    __m512 r[16], t[16];
    for (int i = 0; i < 16; i++) r[i] = _mm512_loadu_ps(src + i * lds);
    for (int i = 0; i < 16; i += 2) {
        t[i] = _mm512_unpacklo_ps(r[i], r[i + 1]);
        t[i + 1] = _mm512_unpackhi_ps(r[i], r[i + 1]);
    }
    for (int i = 0; i < 16; i += 4) {
        r[i] = _mm512_shuffle_ps(t[i], t[i + 2], 0x44);
        r[i + 1] = _mm512_shuffle_ps(t[i], t[i + 2], 0xEE);
        r[i + 2] = _mm512_shuffle_ps(t[i + 1], t[i + 3], 0x44);
        r[i + 3] = _mm512_shuffle_ps(t[i + 1], t[i + 3], 0xEE);
    }
    for (int h = 0; h < 16; h += 8)
        for (int j = 0; j < 4; j++) {
            t[h + j] = _mm512_shuffle_f32x4(r[h + j], r[h + 4 + j], 0x88);
            t[h + 4 + j] = _mm512_shuffle_f32x4(r[h + j], r[h + 4 + j], 0xDD);
        }
    for (int j = 0; j < 8; j++) {
        r[j] = _mm512_shuffle_f32x4(t[j], t[8 + j], 0x88);
        r[8 + j] = _mm512_shuffle_f32x4(t[j], t[8 + j], 0xDD);
    }
    for (int i = 0; i < 16; i++) _mm512_storeu_ps(dst + i * ldd, r[i]);
}
#endif

/* dst (n, m) = src^T for src (m, n) row-major: the right-hand operand of a product with a transposed
 * state, laid out for accumulate_rows. With AVX-512, by 16 x 16 blocks in registers when 16 divides
 * both sides (element by element, the window kernel spent ~12% of its backward here). */
static void transpose(const float *src, float *dst, i64 m, i64 n) {
#ifdef __AVX512F__
    if (m % 16 == 0 && n % 16 == 0) {
        for (i64 i = 0; i < m; i += 16)
            for (i64 j = 0; j < n; j += 16) transpose_block16(src + i * n + j, n, dst + j * m + i, m);
        return;
    }
#endif
    for (i64 i = 0; i < m; i++)
        for (i64 j = 0; j < n; j++) dst[j * m + i] = src[i * n + j];
}

/* out (m, n) = alpha A B: accumulate_rows into zeroed rows. */
static void product_rows(const float *A, i64 rs, i64 cs, const float *B, i64 ldb, float *out, i64 m, i64 k, i64 n,
                         float alpha) {
    memset(out, 0, (size_t)(m * n) * sizeof(float));
    accumulate_rows(A, rs, cs, B, ldb, out, n, m, k, n, alpha);
}

/* Ask for n floats from p into the cache ahead of their use (the chunk loops below are otherwise
 * bound by waiting on memory: their products are small, their operands new each chunk). */
static inline void prefetch(const float *p, i64 n) {
    for (i64 x = 0; x < n; x += 16) __builtin_prefetch(p + x, 0, 3);
}

/* The decay factors of chunk r (R chunks of C positions, b the cumulative log decay in each chunk or NULL):
 * eb[i] = e^{b_i}, to_end[i] = e^{b_last - b_i}, flushed below `flush` as ops/gated_linear.flushed_exp;
 * returns the chunk's carry e^{b_last} (flushed). Ungated: all 1. */
static float chunk_decays(const float *b, i64 r, i64 C, float flush, float *eb, float *to_end) {
    if (!b) {
        for (i64 i = 0; i < C; i++) eb[i] = to_end[i] = 1.0f;
        return 1.0f;
    }
    const float *br = b + r * C;
    float last = br[C - 1];
    for (i64 i = 0; i < C; i++) {
        eb[i] = flushed_exp(br[i], flush);
        to_end[i] = flushed_exp(last - br[i], flush);
    }
    return eb[C - 1];
}

/* Floats of scratch the delta rule's chunk loops take per sequence: two factors per position, a (C, D|Dv)
 * block and a (Dv, D) transposed state. */
#define DELTA_RULE_SCRATCH(C, D, Dv) (2 * (C) + (C) * ((D) > (Dv) ? (D) : (Dv)) + (D) * (Dv))

/* rows (m, n) of x: x[i, :] *= f[i] * alpha. */
static void scale_rows(float *x, const float *f, float alpha, i64 m, i64 n) {
    for (i64 i = 0; i < m; i++) {
        float s = f[i] * alpha;
#pragma omp simd
        for (i64 j = 0; j < n; j++) x[i * n + j] *= s;
    }
}

/* The chunked delta rule's chunk-to-chunk recurrence (ops/delta_rule.py ChunkDeltaRule), G sequences of
 * nc chunks of C positions, with every product that reads or writes the carried state done while the
 * state is in cache, and the decays applied there (so Q ⊙ e^b and K ⊙ e^{b_last - b} are never
 * written out). uw (G, nc, C, Dv + D) holds [u w] by rows: u is overwritten with new = u - w S; k, q
 * (G, nc, C, D); b (G, nc, C) the cumulative log decay in each chunk, NULL ungated; out (G, nc, C, Dv)
 * receives scale (q ⊙ e^b) S (the output's part from earlier chunks); states (G, nc, D, Dv) the state
 * before each chunk; S (G, D, Dv) holds the initial state and returns the final one:
 *     S' = e^{b_last} S + (k ⊙ e^{b_last - b})^T new. */
void delta_rule_forward_loop(float *uw, const float *k, const float *q, const float *b, float scale, float flush,
                             float *out, float *states, float *S, float *scratch, i64 G, i64 nc, i64 C, i64 D, i64 Dv) {
    i64 row = Dv + D, DDv = D * Dv;
#pragma omp parallel for schedule(static)
    for (i64 g = 0; g < G; g++) {
        float *Sg = S + g * DDv;
        float *eb = scratch + g * DELTA_RULE_SCRATCH(C, D, Dv), *to_end = eb + C, *tmp = eb + 2 * C; /* tmp (C, Dv) */
        for (i64 c = 0; c < nc; c++) {
            i64 chunk = g * nc + c;
            float a = chunk_decays(b, chunk, C, flush, eb, to_end);
            memcpy(states + chunk * DDv, Sg, (size_t)DDv * sizeof(float));
            float *u = uw + chunk * C * row, *oc = out + chunk * C * Dv;
            const float *kc = k + chunk * C * D;
            if (c + 1 < nc) {
                prefetch(u + C * row, C * row);
                prefetch(q + (chunk + 1) * C * D, C * D);
                prefetch(kc + C * D, C * D);
            }
            product_rows(q + chunk * C * D, D, 1, Sg, Dv, oc, C, D, Dv, 1.0f); /* q S */
            scale_rows(oc, eb, scale, C, Dv);
            accumulate_rows(u + Dv, row, 1, Sg, Dv, u, row, C, D, Dv, -1.0f); /* new = u - w S */
            if (b) {
#pragma omp simd
                for (i64 x = 0; x < DDv; x++) Sg[x] *= a;
            }
            for (i64 i = 0; i < C; i++) /* (e^{b_last - b} ⊙ new) */
#pragma omp simd
                for (i64 e = 0; e < Dv; e++) tmp[i * Dv + e] = to_end[i] * u[i * row + e];
            accumulate_rows(kc, 1, D, tmp, Dv, Sg, Dv, D, C, Dv, 1.0f); /* S += k^T (to_end ⊙ new) */
        }
    }
}

static float dot(const float *x, const float *y, i64 n) {
    float s = 0.0f;
#pragma omp simd reduction(+ : s)
    for (i64 i = 0; i < n; i++) s += x[i] * y[i];
    return s;
}

/* Its backward, chunk by chunk from the last, with dS = d loss / d S_{c+1} running (d loss / d (final
 * state) in, d loss / d S_0 out, (G, D, Dv)), eb = e^b, to_end = e^{b_last - b}, a = e^{b_last}:
 *     dk   = to_end ⊙ (new dS^T)                               d loss / d k through the state update
 *     d_new += to_end ⊙ (k dS);   y = T^T d_new                  (y = d loss / d r)
 *     dS  <- a dS + q^T (scale eb ⊙ d_out) - w^T d_new         (d loss / d S_c)
 *     d_q  = scale eb ⊙ (d_out S_c^T);   d_kb = eb ⊙ (-y S_c^T)  (d_kb: through Kw = β K ⊙ e^b, over β)
 * and, gated (b not NULL), d loss / d b from these: db_rows (G, nc, C) = d_qd.qd + d_kw.kw - d_kd.kd
 * per position (d_qd = d_out S^T, qd = scale q eb, d_kw = -y S^T, kw = β k eb, d_kd = new dS^T,
 * kd = k to_end) and db_last (G, nc) = a <S_c, dS_{c+1}> + sum of d_kd.kd over the chunk (the terms
 * through b_last). d_new (G, nc, C, Dv): the in-chunk part in, the whole gradient out; T (G, nc, C, C)
 * read with element strides (t_rs, t_cs), so a column-major T (torch.linalg.solve_triangular's) is
 * read as it lies; beta (G, nc, C); y (G, nc, C, Dv) and d_q, d_kb, dk (G, nc, C, D) overwritten. */
void delta_rule_backward_loop(float *d_new, const float *k, const float *q, const float *uw, const float *T, i64 t_rs,
                              i64 t_cs, const float *b, const float *beta, float scale, float flush,
                              const float *d_out, const float *states, float *y, float *d_q, float *d_kb, float *dk,
                              float *db_rows, float *db_last, float *dS, float *scratch, i64 G, i64 nc, i64 C, i64 D,
                              i64 Dv) {
    i64 row = Dv + D, DDv = D * Dv, wide = D > Dv ? D : Dv;
#pragma omp parallel for schedule(static)
    for (i64 g = 0; g < G; g++) {
        float *dSg = dS + g * DDv;
        float *eb = scratch + g * DELTA_RULE_SCRATCH(C, D, Dv);
        float *to_end = eb + C, *tmp = eb + 2 * C, *transposed = tmp + C * wide; /* (C, D|Dv); (Dv, D) */
        for (i64 c = nc - 1; c >= 0; c--) {
            i64 chunk = g * nc + c;
            float a = chunk_decays(b, chunk, C, flush, eb, to_end);
            const float *Sc = states + chunk * DDv, *u = uw + chunk * C * row, *kc = k + chunk * C * D;
            const float *qc = q + chunk * C * D, *doc = d_out + chunk * C * Dv, *bc = beta + chunk * C;
            float *dn = d_new + chunk * C * Dv, *yc = y + chunk * C * Dv, *dqc = d_q + chunk * C * D;
            float *dkbc = d_kb + chunk * C * D, *dkc = dk + chunk * C * D;
            if (c > 0) { /* the previous chunk's operands, while this one computes */
                prefetch(Sc - DDv, DDv);
                prefetch(u - C * row, C * row);
                prefetch(kc - C * D, C * D);
                prefetch(qc - C * D, C * D);
                prefetch(dn - C * Dv, C * Dv);
                prefetch(doc - C * Dv, C * Dv);
                prefetch(T + (chunk - 1) * C * C, C * C);
            }
            float through_end = 0.0f, *dbr = b ? db_rows + chunk * C : NULL;
            transpose(dSg, transposed, D, Dv);
            product_rows(u, row, 1, transposed, D, dkc, C, Dv, D, 1.0f); /* d_kd = new dS^T */
            if (b) {
                for (i64 i = 0; i < C; i++) {
                    float e = to_end[i] * dot(dkc + i * D, kc + i * D, D); /* d_kd.kd */
                    dbr[i] = -e;
                    through_end += e;
                }
                db_last[chunk] = through_end + a * dot(Sc, dSg, DDv);
            }
            scale_rows(dkc, to_end, 1.0f, C, D);
            product_rows(kc, D, 1, dSg, Dv, tmp, C, D, Dv, 1.0f); /* k dS */
            for (i64 i = 0; i < C; i++)
#pragma omp simd
                for (i64 e = 0; e < Dv; e++) dn[i * Dv + e] += to_end[i] * tmp[i * Dv + e];
            product_rows(T + chunk * C * C, t_cs, t_rs, dn, Dv, yc, C, C, Dv, 1.0f); /* y = T^T d new */
            if (b) {
#pragma omp simd
                for (i64 x = 0; x < DDv; x++) dSg[x] *= a;
            }
            for (i64 i = 0; i < C; i++) /* scale eb ⊙ d_out */
#pragma omp simd
                for (i64 e = 0; e < Dv; e++) tmp[i * Dv + e] = scale * eb[i] * doc[i * Dv + e];
            accumulate_rows(qc, 1, D, tmp, Dv, dSg, Dv, D, C, Dv, 1.0f); /* += q^T (scale eb ⊙ d_out) */
            accumulate_rows(u + Dv, 1, row, dn, Dv, dSg, Dv, D, C, Dv, -1.0f); /* -= w^T d new */
            transpose(Sc, transposed, D, Dv);
            product_rows(doc, Dv, 1, transposed, D, dqc, C, Dv, D, 1.0f); /* d_qd = d_out S^T */
            product_rows(yc, Dv, 1, transposed, D, dkbc, C, Dv, D, -1.0f); /* d_kw = -y S^T */
            if (b) /* d_qd.qd + d_kw.kw */
                for (i64 i = 0; i < C; i++) {
                    const float *qi = qc + i * D, *ki = kc + i * D;
                    dbr[i] += eb[i] * (scale * dot(dqc + i * D, qi, D) + bc[i] * dot(dkbc + i * D, ki, D));
                }
            scale_rows(dqc, eb, scale, C, D);
            scale_rows(dkbc, eb, 1.0f, C, D);
        }
    }
}

/* The chunked delta rule's right-hand sides (ops/delta_rule.py delta_rule_rhs), R = G nc chunks of C
 * positions, k (R C, D), v (R C, Dv), beta (R C), b (R C) the cumulative log decay in each chunk or NULL
 * (ungated): rhs (R C, Dv + D) = [beta v, beta k e^b], e^b flushed below `flush` as flushed_exp. */
void delta_rule_rhs(const float *k, const float *v, const float *beta, const float *b, float *rhs, float flush, i64 R,
                    i64 C, i64 D, i64 Dv) {
#pragma omp parallel for schedule(static)
    for (i64 t = 0; t < R * C; t++) {
        float bt = beta[t], eb = b ? flushed_exp(b[t], flush) : 1.0f;
        float *row = rhs + t * (Dv + D), kw = bt * eb;
        const float *vt = v + t * Dv, *kt = k + t * D;
#pragma omp simd
        for (i64 e = 0; e < Dv; e++) row[e] = bt * vt[e];
#pragma omp simd
        for (i64 d = 0; d < D; d++) row[Dv + d] = kw * kt[d];
    }
}

/* The chunked delta rule's last elementwise step of the backward, n positions (ops/delta_rule.py):
 * dk += beta d_kb, dv = beta y, d_beta += y.v + d_kb.k. */
void delta_rule_grad_epilogue(float *dk, const float *d_kb, float *dv, float *d_beta, const float *y, const float *v,
                              const float *k, const float *beta, i64 n, i64 D, i64 Dv) {
#pragma omp parallel for schedule(static)
    for (i64 t = 0; t < n; t++) {
        float *dkt = dk + t * D, bt = beta[t], sb = 0.0f, sy = 0.0f;
        const float *dkbt = d_kb + t * D, *kt = k + t * D;
#pragma omp simd reduction(+ : sb)
        for (i64 d = 0; d < D; d++) {
            dkt[d] += bt * dkbt[d];
            sb += dkbt[d] * kt[d];
        }
        const float *yt = y + t * Dv, *vt = v + t * Dv;
        float *dvt = dv + t * Dv;
#pragma omp simd reduction(+ : sy)
        for (i64 e = 0; e < Dv; e++) {
            dvt[e] = bt * yt[e];
            sy += yt[e] * vt[e];
        }
        d_beta[t] += sy + sb;
    }
}

/* gla's chunked form with one in-chunk block (ops/gated_linear.py ChunkPerDimGLA, sub >= C): R chunks of
 * C positions x D key dimensions, b (R C, D) the cumulative log decay in each chunk. Writes
 * q_hat = scale q e^b, kd = k e^{b_last - b} (flushed below `flush`), k_hat = k e^{-b} (flushed likewise). */
void gla_chunk_factors(const float *q, const float *k, const float *b, float *q_hat, float *kd, float *k_hat,
                       float scale, float flush, i64 R, i64 C, i64 D) {
#pragma omp parallel for schedule(static)
    for (i64 r = 0; r < R; r++) {
        const float *last = b + (r * C + C - 1) * D;
        for (i64 i = 0; i < C; i++) {
            i64 o = (r * C + i) * D;
#pragma omp simd
            for (i64 d = 0; d < D; d++) {
                float bd = b[o + d];
                q_hat[o + d] = scale * q[o + d] * exp_nonpositive(bd);
                kd[o + d] = k[o + d] * flushed_exp(last[d] - bd, flush);
                k_hat[o + d] = k[o + d] * flushed_exp(-bd, flush);
            }
        }
    }
}

/* Its backward's elementwise part. From the gradients w.r.t. qd = q_hat (through the states), kd, and
 * q_hat, k_hat (through the in-chunk scores), and d_last (R, D): d loss / d b_last through the carry:
 * d_q = scale e^b (d_qd + d_q_hat), dk = e^{b_last - b} d_kd + e^{-b} d_k_hat, and dg = the sums from each
 * position to the chunk end of d loss / d b = d_qd qd + d_q_hat q_hat - d_kd kd - d_k_hat k_hat, plus, at
 * the chunk end, the sum of d_kd kd over the chunk and d_last. */
void gla_chunk_grad_epilogue(const float *d_qd, const float *d_kd, const float *d_q_hat, const float *d_k_hat,
                             const float *q, const float *k, const float *b, const float *d_last, float *d_q,
                             float *dk, float *dg, float scale, float flush, i64 R, i64 C, i64 D) {
#pragma omp parallel for schedule(static)
    for (i64 r = 0; r < R; r++) {
        const float *last = b + (r * C + C - 1) * D;
        float run[D > 0 ? D : 1], e_kd[D > 0 ? D : 1];
        for (i64 d = 0; d < D; d++) run[d] = e_kd[d] = 0.0f;
        for (i64 i = C - 1; i >= 0; i--) {
            i64 o = (r * C + i) * D;
#pragma omp simd
            for (i64 d = 0; d < D; d++) {
                float bd = b[o + d], eb = exp_nonpositive(bd);
                float to_end = flushed_exp(last[d] - bd, flush), inv = flushed_exp(-bd, flush);
                float qh = scale * q[o + d] * eb, kdv = k[o + d] * to_end, kh = k[o + d] * inv;
                float gq = d_qd[o + d] + d_q_hat[o + d], e = d_kd[o + d] * kdv;
                d_q[o + d] = scale * eb * gq;
                dk[o + d] = to_end * d_kd[o + d] + inv * d_k_hat[o + d];
                run[d] += gq * qh - e - d_k_hat[o + d] * kh;
                e_kd[d] += e;
                dg[o + d] = run[d];
            }
        }
        const float *dl = d_last + r * D;
        for (i64 i = 0; i < C; i++) {
            i64 o = (r * C + i) * D;
#pragma omp simd
            for (i64 d = 0; d < D; d++) dg[o + d] += e_kd[d] + dl[d];
        }
    }
}

/* Sliding-window softmax attention by blocks (local.py), BH sequences of L = nb C positions, q, k (BH, L, D),
 * v (BH, L, Dv) contiguous. Block b's C queries see the W = (before + 1 + after) C keys from (b - before) C on,
 * those inside [0, L) (the window's columns s0..s1); query r may use key s of the window when
 * lowest <= s - before C - r <= highest and the key is real (valid (BH / heads, L) nonzero; NULL: all are).
 * Only the keys inside the sequence enter the products, so the first and last blocks do less work. */
typedef struct {
    i64 BH, nb, C, before, after, lowest, highest, D, Dv, heads;
} window_shape;

/* How many threads a parallel loop here may use, and which one this is: the window kernels' working
 * memory is one row per thread (a row can be large: 2 C W floats for blocks of C and windows of W). */
int parallel_threads(void) {
#ifdef _OPENMP
    return omp_get_max_threads();
#else
    return 1;
#endif
}

static i64 thread_index(void) {
#ifdef _OPENMP
    return omp_get_thread_num();
#else
    return 0;
#endif
}

static i64 window_scratch(const window_shape *w) {
    i64 W = (w->before + 1 + w->after) * w->C, wide = w->D > w->Dv ? w->D : w->Dv;
    return wide * W + 2 * w->C * W + 2 * w->C;
}

/* The columns [s0, s1) of block b's window that lie in the sequence, and the window's first position. */
static i64 window_columns(const window_shape *w, i64 b, i64 *s0, i64 *s1) {
    i64 L = w->nb * w->C, W = (w->before + 1 + w->after) * w->C, start = (b - w->before) * w->C;
    *s0 = start < 0 ? -start : 0;
    *s1 = start + W > L ? L - start : W;
    return start;
}

/* The band of query r: the window columns [lo, hi) (relative to s0) its offsets allow. */
static void band_range(const window_shape *w, i64 r, i64 s0, i64 n, i64 *lo, i64 *hi) {
    i64 base = w->before * w->C + r - s0; /* column of offset 0 */
    i64 a = base + w->lowest, z = base + w->highest + 1;
    *lo = a < 0 ? 0 : (a > n ? n : a);
    *hi = z > n ? n : (z < *lo ? *lo : z);
}

/* Scores of block b, scaled and masked (masked: -INFINITY; outside each query's band they are not even
 * computed into, but set), into S (C, n), n = s1 - s0, from q and a (D, n) transposed copy of the window's
 * keys. */
static void window_scores(const window_shape *w, const float *q, const float *k, const float *valid, float scale,
                          i64 bh, i64 b, float *kt, float *S, i64 *s0_out, i64 *n_out) {
    i64 C = w->C, D = w->D, L = w->nb * C, s0, s1;
    i64 start = window_columns(w, b, &s0, &s1), n = s1 - s0;
    const float *kw = k + (bh * L + start + s0) * D, *qb = q + (bh * L + b * C) * D;
    transpose(kw, kt, n, D);
    product_rows(qb, D, 1, kt, n, S, C, D, n, scale);
    const float *ok = valid ? valid + (bh / w->heads) * L + start + s0 : NULL;
    const float minus_inf = -__builtin_inff();
    for (i64 r = 0; r < C; r++) {
        i64 lo, hi;
        band_range(w, r, s0, n, &lo, &hi);
        float *row = S + r * n;
        for (i64 s = 0; s < lo; s++) row[s] = minus_inf;
        for (i64 s = hi; s < n; s++) row[s] = minus_inf;
        if (ok) {
#pragma omp simd
            for (i64 s = lo; s < hi; s++) row[s] = ok[s] == 0.0f ? minus_inf : row[s];
        }
    }
    *s0_out = s0;
    *n_out = n;
}

/* Forward: out (BH, L, Dv); lse (BH, L) = log sum exp of each query's scores (-INFINITY for a query with no
 * key: its output is 0, as PyTorch's fused kernels give). */
void window_attention_forward(const float *q, const float *k, const float *v, const float *valid, float *out,
                              float *lse, float scale, float *scratch, i64 BH, i64 nb, i64 C, i64 before, i64 after,
                              i64 lowest, i64 highest, i64 D, i64 Dv, i64 heads) {
    window_shape w = {BH, nb, C, before, after, lowest, highest, D, Dv, heads};
    i64 L = nb * C;
#pragma omp parallel for schedule(static)
    for (i64 bh = 0; bh < BH; bh++) {
        float *kt = scratch + thread_index() * window_scratch(&w), *S = kt + (D > Dv ? D : Dv) * (before + 1 + after) * C;
        for (i64 b = 0; b < nb; b++) {
            i64 s0, n;
            window_scores(&w, q, k, valid, scale, bh, b, kt, S, &s0, &n);
            float *ob = out + (bh * L + b * C) * Dv, *lb = lse + bh * L + b * C;
            for (i64 r = 0; r < C; r++) {
                i64 lo, hi;
                band_range(&w, r, s0, n, &lo, &hi);
                float *row = S + r * n, m = -__builtin_inff(), l = 0.0f;
#pragma omp simd reduction(max : m)
                for (i64 s = lo; s < hi; s++) m = row[s] > m ? row[s] : m;
                for (i64 s = 0; s < lo; s++) row[s] = 0.0f;
                for (i64 s = hi; s < n; s++) row[s] = 0.0f;
                if (m == -__builtin_inff()) { /* no key: output 0 */
                    for (i64 s = lo; s < hi; s++) row[s] = 0.0f;
                    lb[r] = -__builtin_inff();
                    continue;
                }
#pragma omp simd reduction(+ : l)
                for (i64 s = lo; s < hi; s++) { /* exp(-inf - m) is 2^-126 here, not 0: masked by hand */
                    float p = row[s] == -__builtin_inff() ? 0.0f : exp_nonpositive(row[s] - m);
                    row[s] = p;
                    l += p;
                }
                float inv = 1.0f / l;
#pragma omp simd
                for (i64 s = lo; s < hi; s++) row[s] *= inv;
                lb[r] = m + __builtin_logf(l);
            }
            i64 start = (b - before) * C;
            product_rows(S, n, 1, v + (bh * L + start + s0) * Dv, Dv, ob, C, n, Dv, 1.0f); /* P V */
        }
    }
}

/* Backward: from d_out and the forward's out and lse, dq, dk and dv (BH, L, ·) accumulated into (zeroed by
 * the caller, or holding another part's gradients: based's). */
void window_attention_backward(const float *q, const float *k, const float *v, const float *valid, const float *out,
                               const float *lse, const float *d_out, float *dq, float *dk, float *dv, float scale,
                               float *scratch, i64 BH, i64 nb, i64 C, i64 before, i64 after, i64 lowest, i64 highest,
                               i64 D, i64 Dv, i64 heads) {
    window_shape w = {BH, nb, C, before, after, lowest, highest, D, Dv, heads};
    i64 L = nb * C, W = (before + 1 + after) * C;
#pragma omp parallel for schedule(static)
    for (i64 bh = 0; bh < BH; bh++) {
        float *kt = scratch + thread_index() * window_scratch(&w), *S = kt + (D > Dv ? D : Dv) * W, *dP = S + C * W;
        float *delta = dP + C * W;
        for (i64 b = 0; b < nb; b++) {
            i64 s0, n;
            window_scores(&w, q, k, valid, scale, bh, b, kt, S, &s0, &n);
            i64 start = (b - before) * C, row0 = bh * L + b * C;
            const float *lb = lse + row0, *dob = d_out + row0 * Dv, *vw = v + (bh * L + start + s0) * Dv;
            for (i64 r = 0; r < C; r++) { /* P, and delta = d_out . out per query */
                i64 lo, hi;
                band_range(&w, r, s0, n, &lo, &hi);
                float *row = S + r * n, l = lb[r];
                for (i64 s = 0; s < lo; s++) row[s] = 0.0f;
                for (i64 s = hi; s < n; s++) row[s] = 0.0f;
                if (l == -__builtin_inff()) /* no key: P is 0 */
                    for (; lo < hi; lo++) row[lo] = 0.0f;
#pragma omp simd
                for (i64 s = lo; s < hi; s++) row[s] = row[s] == -__builtin_inff() ? 0.0f : exp_nonpositive(row[s] - l);
                delta[r] = dot(dob + r * Dv, out + (row0 + r) * Dv, Dv);
            }
            transpose(vw, kt, n, Dv); /* the window's values, transposed (Dv, n) */
            product_rows(dob, Dv, 1, kt, n, dP, C, Dv, n, 1.0f); /* d_out V^T */
            for (i64 r = 0; r < C; r++) /* dS = P (dP - delta) scale, in dP */
                for (i64 s = 0; s < n; s++) dP[r * n + s] = S[r * n + s] * (dP[r * n + s] - delta[r]) * scale;
            const float *kw = k + (bh * L + start + s0) * D;
            accumulate_rows(dP, n, 1, kw, D, dq + row0 * D, D, C, n, D, 1.0f); /* dq += dS K */
            accumulate_rows(dP, 1, n, q + row0 * D, D, dk + (bh * L + start + s0) * D, D, n, C, D, 1.0f); /* dS^T Q */
            accumulate_rows(S, 1, n, dob, Dv, dv + (bh * L + start + s0) * Dv, Dv, n, C, Dv, 1.0f); /* P^T d_out */
        }
    }
}

/* Based's chunk loops (ops/based.py ChunkBased; attention/based.py FusedBased): causal normalised linear
 * attention with the Taylor kernel κ(q, k) = 1 + q.k + (q.k)^2 / 2, for G sequences of nc chunks of C
 * positions: features q (pre-scaled) and k (G, nc, C, d), v (G, nc, C, Dv), keep (G, nc, C) 1 for a real
 * key, 0 for a padded one. The state carried between chunks is [Z z] = Σ over earlier chunks' real keys
 * of φ(k)^T [v 1] (F, Dv + 1), F = 1 + d + d(d+1)/2 (taylor_features). Each chunk's features are formed
 * in cache, transposed (F, C) so that they vectorise along the chunk, and never written out; the
 * numerator's Dv columns and the denominator's one are separate products (as one 65-column [v 1]
 * operand, batched products ran at ~60% of their speed with 64). */

#define TAYLOR_FEATURES(d) (1 + (d) + (d) * ((d) + 1) / 2)

/* Floats of working memory per sequence: the loops' transposes, features, scores and running sums. */
i64 based_scratch_floats(i64 C, i64 d, i64 Dv) {
    i64 F = TAYLOR_FEATURES(d);
    return 4 * d * C + 2 * F * C + 4 * C * Dv + 3 * C * C + F * (Dv + 1) + C;
}

/* phiT (F, C) = φ of the C columns of xT (d, C), the rows ordered as taylor_features'. */
static void taylor_columns(const float *xT, float *phiT, i64 d, i64 C) {
    const float half = 0.70710678118654752f;
    for (i64 i = 0; i < C; i++) phiT[i] = 1.0f;
    memcpy(phiT + C, xT, (size_t)(d * C) * sizeof(float));
    float *p = phiT + (1 + d) * C;
    for (i64 a = 0; a < d; a++) {
        const float *xa = xT + a * C;
        for (i64 b = a; b < d; b++, p += C) {
            const float *xb = xT + b * C;
            float c = b == a ? half : 1.0f;
#pragma omp simd
            for (i64 i = 0; i < C; i++) p[i] = c * xa[i] * xb[i];
        }
    }
}

/* dxT (d, C) += d loss / d x through φ, from dphiT (F, C) = d loss / d φ at xT (d, C). */
static void taylor_columns_backward(const float *dphiT, const float *xT, float *dxT, i64 d, i64 C) {
    const float root2 = 1.41421356237309505f; /* d(x_a^2 / sqrt 2) / dx_a = sqrt 2 x_a */
    for (i64 a = 0; a < d; a++)
#pragma omp simd
        for (i64 i = 0; i < C; i++) dxT[a * C + i] += dphiT[(1 + a) * C + i];
    const float *g = dphiT + (1 + d) * C;
    for (i64 a = 0; a < d; a++) {
        const float *xa = xT + a * C;
        float *da = dxT + a * C;
#pragma omp simd
        for (i64 i = 0; i < C; i++) da[i] += root2 * g[i] * xa[i];
        g += C;
        for (i64 b = a + 1; b < d; b++, g += C) {
            const float *xb = xT + b * C;
            float *db = dxT + b * C;
#pragma omp simd
            for (i64 i = 0; i < C; i++) {
                da[i] += g[i] * xb[i];
                db[i] += g[i] * xa[i];
            }
        }
    }
}

/* out (m, C) += x (m) ⊗ y (C), the denominators' rank-one terms. */
static void add_outer(float *out, const float *x, const float *y, i64 m, i64 C) {
    for (i64 f = 0; f < m; f++) {
        float xf = x[f];
#pragma omp simd
        for (i64 i = 0; i < C; i++) out[f * C + i] += xf * y[i];
    }
}

/* Forward: out (G, nc, C, Dv) the normalised output, den (G, nc, C) its denominator (+ eps), states
 * (G, nc, F, Dv + 1) [Z z] before each chunk ([Z z] by rows: Z (F, Dv), then z (F)). */
void based_forward_loop(const float *q, const float *k, const float *v, const float *keep, float eps, float *out,
                        float *den, float *states, float *scratch, i64 G, i64 nc, i64 C, i64 d, i64 Dv) {
    const i64 F = TAYLOR_FEATURES(d), state = F * (Dv + 1);
#pragma omp parallel for schedule(static)
    for (i64 g = 0; g < G; g++) {
        float *qT = scratch + g * based_scratch_floats(C, d, Dv), *kT = qT + d * C; /* (d, C) */
        float *phq = kT + d * C, *phk = phq + F * C, *vk = phk + F * C;           /* (F, C), (F, C), (C, Dv) */
        float *kappa = vk + C * Dv, *Z = kappa + C * C, *z = Z + F * Dv;          /* (C, C), (F, Dv), (F) */
        memset(Z, 0, (size_t)state * sizeof(float));
        for (i64 c = 0; c < nc; c++) {
            i64 chunk = g * nc + c;
            const float *qc = q + chunk * C * d, *kc = k + chunk * C * d, *vc = v + chunk * C * Dv;
            const float *kp = keep + chunk * C;
            float *oc = out + chunk * C * Dv, *dc = den + chunk * C;
            memcpy(states + chunk * state, Z, (size_t)state * sizeof(float));
            if (c + 1 < nc) {
                prefetch(vc + C * Dv, C * Dv);
                prefetch(qc + C * d, C * d);
                prefetch(kc + C * d, C * d);
            }
            transpose(qc, qT, C, d);
            transpose(kc, kT, C, d);
            for (i64 i = 0; i < C; i++)
#pragma omp simd
                for (i64 e = 0; e < Dv; e++) vk[i * Dv + e] = kp[i] * vc[i * Dv + e];
            /* in the chunk: κ = tril(1 + s + s^2 / 2), s = q k^T; numerator κ vk, denominator κ keep */
            product_rows(qc, d, 1, kT, C, kappa, C, d, C, 1.0f);
            for (i64 i = 0; i < C; i++) {
                float *row = kappa + i * C, sum = 0.0f;
                for (i64 j = 0; j <= i; j++) {
                    float s = row[j];
                    row[j] = 1.0f + s + 0.5f * s * s;
                    sum += row[j] * kp[j];
                }
                for (i64 j = i + 1; j < C; j++) row[j] = 0.0f;
                dc[i] = sum;
            }
            product_rows(kappa, C, 1, vk, Dv, oc, C, C, Dv, 1.0f);
            if (c > 0) { /* from earlier chunks: φ(q) Z, φ(q) z */
                taylor_columns(qT, phq, d, C);
                accumulate_rows(phq, 1, C, Z, Dv, oc, Dv, C, F, Dv, 1.0f);
                for (i64 f = 0; f < F; f++) {
                    float zf = z[f];
#pragma omp simd
                    for (i64 i = 0; i < C; i++) dc[i] += zf * phq[f * C + i];
                }
            }
            for (i64 i = 0; i < C; i++) {
                dc[i] += eps;
                float inv = 1.0f / dc[i];
#pragma omp simd
                for (i64 e = 0; e < Dv; e++) oc[i * Dv + e] *= inv;
            }
            if (c + 1 < nc) { /* [Z z] += φ(k)^T [vk keep] */
                taylor_columns(kT, phk, d, C);
                accumulate_rows(phk, C, 1, vk, Dv, Z, Dv, F, C, Dv, 1.0f);
                for (i64 f = 0; f < F; f++) z[f] += dot(phk + f * C, kp, C);
            }
        }
    }
}

/* Backward, chunk by chunk from the last, with [dW dw] = d loss / d [Z z] summed over later chunks
 * running: from d_out and the forward's out, den and states, dq, dk (G, nc, C, d) and dv (G, nc, C, Dv)
 * overwritten. With dn = d_out / den and dd = -(d_out . out) / den (d loss / d numerator, denominator):
 *     in the chunk    dκ = tril(dn vk^T + dd keep^T), ds = dκ ⊙ (1 + s): dq = ds k, dk = ds^T q, dvk = κ^T dn
 *     through [Z z]   dφ(q) = dn Z^T + dd z^T;  dφ(k) = vk dW^T + keep dw^T, dvk += φ(k) dW
 *     and then        [dW dw] += φ(q)^T [dn dd]
 * (dv = keep ⊙ dvk). */
void based_backward_loop(const float *q, const float *k, const float *v, const float *keep, const float *out,
                         const float *den, const float *states, const float *d_out, float *dq, float *dk, float *dv,
                         float *scratch, i64 G, i64 nc, i64 C, i64 d, i64 Dv) {
    const i64 F = TAYLOR_FEATURES(d), state = F * (Dv + 1);
#pragma omp parallel for schedule(static)
    for (i64 g = 0; g < G; g++) {
        float *qT = scratch + g * based_scratch_floats(C, d, Dv), *kT = qT + d * C;  /* (d, C) */
        float *dqT = kT + d * C, *dkT = dqT + d * C;                                 /* (d, C) */
        float *phi = dkT + d * C, *dphi = phi + F * C, *vk = dphi + F * C;           /* (F, C), (F, C), (C, Dv) */
        float *vkT = vk + C * Dv, *dn = vkT + Dv * C, *dnT = dn + C * Dv;           /* (Dv, C), (C, Dv), (Dv, C) */
        float *kappa = dnT + Dv * C, *ds = kappa + C * C, *dsT = ds + C * C;         /* (C, C) */
        float *dW = dsT + C * C, *dw = dW + F * Dv, *dd = dw + F;                    /* (F, Dv), (F), (C) */
        memset(dW, 0, (size_t)state * sizeof(float));
        for (i64 c = nc - 1; c >= 0; c--) {
            i64 chunk = g * nc + c;
            const float *qc = q + chunk * C * d, *kc = k + chunk * C * d, *vc = v + chunk * C * Dv;
            const float *kp = keep + chunk * C, *oc = out + chunk * C * Dv, *doc = d_out + chunk * C * Dv;
            const float *dc = den + chunk * C;
            float *dvc = dv + chunk * C * Dv;
            if (c > 0) {
                prefetch(states + (chunk - 1) * state, state);
                prefetch(vc - C * Dv, C * Dv);
                prefetch(doc - C * Dv, C * Dv);
                prefetch(oc - C * Dv, C * Dv);
            }
            transpose(qc, qT, C, d);
            transpose(kc, kT, C, d);
            for (i64 i = 0; i < C; i++) {
                float inv = 1.0f / dc[i];
                dd[i] = -inv * dot(doc + i * Dv, oc + i * Dv, Dv);
#pragma omp simd
                for (i64 e = 0; e < Dv; e++) {
                    vk[i * Dv + e] = kp[i] * vc[i * Dv + e];
                    dn[i * Dv + e] = inv * doc[i * Dv + e];
                }
            }
            transpose(vk, vkT, C, Dv);
            transpose(dn, dnT, C, Dv);
            memset(dqT, 0, (size_t)(2 * d * C) * sizeof(float)); /* dqT and dkT */
            /* in the chunk */
            product_rows(qc, d, 1, kT, C, kappa, C, d, C, 1.0f); /* s */
            product_rows(dn, Dv, 1, vkT, C, ds, C, Dv, C, 1.0f); /* dn vk^T */
            for (i64 i = 0; i < C; i++) {
                float *kr = kappa + i * C, *dr = ds + i * C;
                for (i64 j = 0; j <= i; j++) {
                    float s = kr[j];
                    kr[j] = 1.0f + s + 0.5f * s * s;
                    dr[j] = (dr[j] + dd[i] * kp[j]) * (1.0f + s);
                }
                for (i64 j = i + 1; j < C; j++) kr[j] = dr[j] = 0.0f;
            }
            transpose(ds, dsT, C, C);
            product_rows(kappa, 1, C, dn, Dv, dvc, C, C, Dv, 1.0f);   /* dvk = κ^T dn */
            accumulate_rows(kc, 1, d, dsT, C, dqT, C, d, C, C, 1.0f); /* dq^T = k^T ds^T */
            accumulate_rows(qc, 1, d, ds, C, dkT, C, d, C, C, 1.0f);  /* dk^T = q^T ds */
            if (c + 1 < nc) { /* keys: through the sums of later chunks */
                taylor_columns(kT, phi, d, C);
                product_rows(dW, Dv, 1, vkT, C, dphi, F, Dv, C, 1.0f); /* dφ(k)^T = dW vk^T + dw keep^T */
                add_outer(dphi, dw, kp, F, C);
                taylor_columns_backward(dphi, kT, dkT, d, C);
                accumulate_rows(phi, 1, C, dW, Dv, dvc, Dv, C, F, Dv, 1.0f); /* dvk += φ(k) dW */
            }
            if (c > 0) { /* queries: through the sums of earlier chunks, then [dW dw] += φ(q)^T [dn dd] */
                const float *Zc = states + chunk * state, *zc = Zc + F * Dv;
                taylor_columns(qT, phi, d, C);
                product_rows(Zc, Dv, 1, dnT, C, dphi, F, Dv, C, 1.0f); /* dφ(q)^T = Z dn^T + z dd^T */
                add_outer(dphi, zc, dd, F, C);
                taylor_columns_backward(dphi, qT, dqT, d, C);
                accumulate_rows(phi, C, 1, dn, Dv, dW, Dv, F, C, Dv, 1.0f);
                for (i64 f = 0; f < F; f++) dw[f] += dot(phi + f * C, dd, C);
            }
            transpose(dqT, dq + chunk * C * d, d, C);
            transpose(dkT, dk + chunk * C * d, d, C);
            for (i64 i = 0; i < C; i++)
#pragma omp simd
                for (i64 e = 0; e < Dv; e++) dvc[i * Dv + e] *= kp[i];
        }
    }
}
