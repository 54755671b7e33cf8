/* The chunked (gated) delta rule (ops/delta_rule/chunk.py): the in-chunk decays and scores' backward,
 * the right-hand sides and gradient epilogue, and the chunk-to-chunk loops that do every product reading
 * or writing a carried state while it is in cache. */
#include "attnlab_cpu.h"

/* The gated delta rule's in-chunk decays (ops/delta_rule/chunk.py), R chunks of C positions, b (R, C) the
 * cumulative log decay in each chunk. decay_matrix: gamma (R, C, C) = e^{b_i - b_j} for j <= i, 0 above
 * the diagonal, and 0 where below `flush` (as ops/decay.py flushed_exp). */
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


/* The decay factors of chunk r (R chunks of C positions, b the cumulative log decay in each chunk or NULL):
 * eb[i] = e^{b_i}, to_end[i] = e^{b_last - b_i}, flushed below `flush` as ops/decay.py flushed_exp;
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

/* The chunked delta rule's chunk-to-chunk recurrence (ops/delta_rule/chunk.py ChunkDeltaRule), G sequences of
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

/* The scratch size, for the Python side (cpu/kernels.py): one definition, read by both languages. */
i64 delta_rule_scratch_floats(i64 C, i64 D, i64 Dv) { return DELTA_RULE_SCRATCH(C, D, Dv); }

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

/* The chunked delta rule's right-hand sides (ops/delta_rule/chunk.py delta_rule_rhs), R = G nc chunks of C
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

/* The chunked delta rule's last elementwise step of the backward, n positions (ops/delta_rule/chunk.py):
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
