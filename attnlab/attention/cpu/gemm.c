/* The matrix-product micro-kernel of the chunk loops (delta_rule.c, window_softmax.c, based.c): products
 * of a few dozen rows and columns, too small for a library call per product to pay. */
#include "attnlab_cpu.h"

/* out[i, :] += alpha sum_p A[i, p] B[p, :] for i < m, p < k, over n columns: A[i, p] = A[i*rs + p*cs]
 * (so a transposed operand is a stride swap), B and out row-major with row strides ldb, ldo. The small
 * products (C, D ~ 32-64) of the chunk loops below, where a library call per product costs more than
 * the product. With AVX-512: tiles of 4 rows x 64 columns whose 16 running sums stay in registers
 * (each loaded element of A feeds 64 products, each of B 4; docs/measurements.md); elsewhere, and for the remainder, one row at
 * a time. */
void accumulate_rows(const float *A, i64 rs, i64 cs, const float *B, i64 ldb, float *out, i64 ldo, i64 m,
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
 * both sides (element by element, each store touches a new cache line; docs/measurements.md). */
void transpose(const float *src, float *dst, i64 m, i64 n) {
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
void product_rows(const float *A, i64 rs, i64 cs, const float *B, i64 ldb, float *out, i64 m, i64 k, i64 n,
                         float alpha) {
    memset(out, 0, (size_t)(m * n) * sizeof(float));
    accumulate_rows(A, rs, cs, B, ldb, out, n, m, k, n, alpha);
}
