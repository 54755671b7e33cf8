/* GLA's chunked form with one in-chunk block (ops/gated_linear/chunk.py): its decay factors forward and
 * its backward's elementwise part. */
#include "attnlab_cpu.h"

/* gla's chunked form with one in-chunk block (ops/gated_linear/chunk.py ChunkPerDimGLA, sub >= C): R chunks of
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
