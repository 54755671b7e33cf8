/* `local`'s sliding-window softmax attention by blocks, forward and backward (ops/window/chunk.py). */
#include "attnlab_cpu.h"

/* Sliding-window softmax attention by blocks (ops/window/chunk.py), BH sequences of L = nb C positions, q, k (BH, L, D),
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

/* Floats of working memory per thread for blocks of C, `before` and `after` neighbour blocks, D and Dv
 * features: for the Python side (cpu/kernels.py), so the size is written once. */
i64 window_scratch_floats(i64 C, i64 before, i64 after, i64 D, i64 Dv) {
    window_shape w = {0};
    w.C = C, w.before = before, w.after = after, w.D = D, w.Dv = Dv;
    return window_scratch(&w);
}
