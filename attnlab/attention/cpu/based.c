#include "attnlab_cpu.h"

i64 taylor_feature_count(i64 d) { return TAYLOR_FEATURES(d); } /* for the Python side: written once */

/* Based's chunk loops (ops/based/chunk.py ChunkBased; cpu/functions.py FusedBased): causal normalised linear
 * attention with the Taylor kernel κ(q, k) = 1 + q.k + (q.k)^2 / 2, for G sequences of nc chunks of C
 * positions: features q (pre-scaled) and k (G, nc, C, d), v (G, nc, C, Dv), keep (G, nc, C) 1 for a real
 * key, 0 for a padded one. The state carried between chunks is [Z z] = Σ over earlier chunks' real keys
 * of φ(k)^T [v 1] (F, Dv + 1), F = 1 + d + d(d+1)/2 (taylor_features). Each chunk's features are formed
 * in cache, transposed (F, C) so that they vectorise along the chunk, and never written out; the
 * numerator's Dv columns and the denominator's one are separate products (a 65-column [v 1] operand
 * falls off the micro-kernel's 64-column tiles into its row-at-a-time remainder; docs/measurements.md). */

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
