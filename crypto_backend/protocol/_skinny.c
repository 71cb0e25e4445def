/*
 * Native bulk primitives of the ROBERT protocol (PROTOCOL.md sections 3 and 4): SKINNY-64-192, HMAC-SHA256
 * of one-block messages, and the tuples JSON formatter. CPython C API only, no other library.
 *
 * The readable definition of the cipher is crypto_backend/protocol/skinny.py; this file computes the same
 * function fast and is tested against it and against the vectors (tests/crypto_backend/).
 *
 * SKINNY, portable kernel. State: one uint64_t per block, loaded big-endian, so cell 0 (row 0, column 0)
 * is the top nibble and row i is the 16-bit field at bits 48-16i. A round is SubCells, AddConstants +
 * AddRoundTweakey (a 64-bit XOR), ShiftRows and MixColumns. ShiftRows and MixColumns are linear (call
 * their composition L), so
 *
 *     round(s) = L(SB(s) ^ K) = L(SB(s)) ^ L(K)
 *
 * and L(SB(s)) is the XOR of eight 256-entry tables indexed by the bytes of s (like AES T-tables; 16 KiB,
 * key-independent, built at import). Decryption runs the inverse: t = L^-1(c), then per round
 * t = XOR_j TD_j[byte_j(t ^ K_r)] where TD = L^-1 after the inverse S-box, and a final inverse S-box.
 *
 * SKINNY, SSSE3 kernel (x86-64, picked at import from CPUID): one cell a byte, a round is four byte
 * shuffles and three XORs; about 2x the portable kernel. Both kernels process four blocks in step.
 *
 * The key object holds K_r (40 round tweakeys with the round constants folded in), L(K_r) and K_r as
 * cells. Bulk entry points take and return bytes and release the GIL. Secret-indexed table lookups (the
 * portable kernel) are not constant-time against a co-located cache attacker; the SSSE3 kernel is.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__)) && !defined(SKINNY_PORTABLE)
#define X86 1 /* SSSE3 SKINNY and SHA-NI HMAC, chosen at import from CPUID; -DSKINNY_PORTABLE: neither */
#include <cpuid.h>
#include <immintrin.h>
#else
#define X86 0
#endif

#define ROUNDS 40
#define BLOCK 8
#define KEY_SIZE 24
#define ID_A_SIZE 5
#define GIL_THRESHOLD 32 /* blocks: below this, releasing the GIL costs more than it gives */

static const uint8_t SBOX[16] = {0xc, 0x6, 0x9, 0x0, 0x1, 0xa, 0x2, 0xb, 0x3, 0x8, 0x5, 0xd, 0x4, 0xe, 0x7, 0xf};
static uint8_t SBOX_INV[16];
static const uint8_t TK_PERM[16] = {9, 15, 8, 13, 10, 14, 12, 11, 0, 1, 2, 3, 4, 5, 6, 7};

static uint64_t TE[8][256]; /* TE[j][b] = L(SB(b placed at byte j)) */
static uint64_t TD[8][256]; /* TD[j][b] = L^-1(SB^-1(b placed at byte j)) */
static uint8_t SB8_INV[256]; /* inverse S-box on both nibbles of a byte */

/* ---- the linear layer ---------------------------------------------------------------------------- */

static inline uint64_t row(uint64_t s, int i) { return (s >> (48 - 16 * i)) & 0xffff; }
static inline uint64_t ror16(uint64_t r, int n) { return ((r >> n) | (r << (16 - n))) & 0xffff; }

static uint64_t linear(uint64_t s) /* ShiftRows then MixColumns */
{
    uint64_t r0 = row(s, 0), r1 = ror16(row(s, 1), 4), r2 = ror16(row(s, 2), 8), r3 = ror16(row(s, 3), 12);
    uint64_t m0 = r0 ^ r2 ^ r3, m1 = r0, m2 = r1 ^ r2, m3 = r0 ^ r2;
    return (m0 << 48) | (m1 << 32) | (m2 << 16) | m3;
}

static uint64_t linear_inv(uint64_t s) /* MixColumns^-1 then ShiftRows^-1 */
{
    uint64_t m0 = row(s, 0), m1 = row(s, 1), m2 = row(s, 2), m3 = row(s, 3);
    uint64_t r0 = m1, r1 = m1 ^ m2 ^ m3, r2 = m1 ^ m3, r3 = m0 ^ m3;
    r1 = ror16(r1, 12), r2 = ror16(r2, 8), r3 = ror16(r3, 4);
    return (r0 << 48) | (r1 << 32) | (r2 << 16) | r3;
}

static uint8_t sb8(const uint8_t *box, unsigned b) { return (uint8_t)((box[b >> 4] << 4) | box[b & 0xf]); }

static void build_tables(void)
{
    for (int i = 0; i < 16; i++) SBOX_INV[SBOX[i]] = (uint8_t)i;
    for (unsigned b = 0; b < 256; b++) {
        SB8_INV[b] = sb8(SBOX_INV, b);
        for (int j = 0; j < 8; j++) {
            int shift = 56 - 8 * j;
            TE[j][b] = linear((uint64_t)sb8(SBOX, b) << shift);
            TD[j][b] = linear_inv((uint64_t)SB8_INV[b] << shift);
        }
    }
}

/* ---- key schedule (paper section 2: tweakey permutation, LFSRs on TK2/TK3, round constants) -------- */

typedef struct {
    uint64_t enc[ROUNDS];       /* L(K_r) */
    uint64_t dec[ROUNDS];       /* K_r */
    uint8_t cells[ROUNDS][16];  /* K_r one cell a byte, for the SSSE3 rounds */
} schedule_t;

static void key_schedule(schedule_t *ks, const uint8_t *key)
{
    uint8_t tk[3][16], tmp[16];
    unsigned rc = 0;
    for (int t = 0; t < 3; t++)
        for (int i = 0; i < 16; i++) tk[t][i] = (key[8 * t + i / 2] >> ((i & 1) ? 0 : 4)) & 0xf;
    for (int r = 0; r < ROUNDS; r++) {
        uint64_t k = 0;
        rc = ((rc << 1) & 0x3f) | (((rc >> 5) ^ (rc >> 4) ^ 1) & 1);
        for (int i = 0; i < 8; i++) k |= (uint64_t)(tk[0][i] ^ tk[1][i] ^ tk[2][i]) << (60 - 4 * i);
        k ^= ((uint64_t)(rc & 0xf) << 60) | ((uint64_t)(rc >> 4) << 44) | ((uint64_t)0x2 << 28);
        ks->dec[r] = k;
        ks->enc[r] = linear(k);
        for (int i = 0; i < 16; i++) ks->cells[r][i] = (uint8_t)((k >> (60 - 4 * i)) & 0xf);
        for (int t = 0; t < 3; t++) {
            for (int i = 0; i < 16; i++) tmp[i] = tk[t][TK_PERM[i]];
            memcpy(tk[t], tmp, 16);
        }
        for (int i = 0; i < 8; i++) {
            uint8_t x = tk[1][i], y = tk[2][i];
            tk[1][i] = (uint8_t)(((x << 1) & 0xe) | (((x >> 3) ^ (x >> 2)) & 1));
            tk[2][i] = (uint8_t)((y >> 1) | (((y << 3) ^ y) & 0x8));
        }
    }
    memset(tk, 0, sizeof tk);
    memset(tmp, 0, sizeof tmp);
}

/* ---- block functions ------------------------------------------------------------------------------ */

#define T8(T, s)                                                                                           \
    (T[0][(s) >> 56] ^ T[1][((s) >> 48) & 0xff] ^ T[2][((s) >> 40) & 0xff] ^ T[3][((s) >> 32) & 0xff] ^     \
     T[4][((s) >> 24) & 0xff] ^ T[5][((s) >> 16) & 0xff] ^ T[6][((s) >> 8) & 0xff] ^ T[7][(s) & 0xff])

static inline uint64_t load_be(const uint8_t *p)
{
    return ((uint64_t)p[0] << 56) | ((uint64_t)p[1] << 48) | ((uint64_t)p[2] << 40) | ((uint64_t)p[3] << 32) |
           ((uint64_t)p[4] << 24) | ((uint64_t)p[5] << 16) | ((uint64_t)p[6] << 8) | (uint64_t)p[7];
}

static inline void store_be(uint8_t *p, uint64_t v)
{
    for (int i = 7; i >= 0; i--, v >>= 8) p[i] = (uint8_t)v;
}

static inline uint64_t sb8_inv_all(uint64_t t)
{
    uint64_t out = 0;
    for (int j = 0; j < 8; j++) out |= (uint64_t)SB8_INV[(t >> (8 * j)) & 0xff] << (8 * j);
    return out;
}

/* Encrypt four states in step (independent chains overlap in the pipeline). */
static inline void encrypt4(const schedule_t *ks, uint64_t s[4])
{
    uint64_t a = s[0], b = s[1], c = s[2], d = s[3];
    for (int r = 0; r < ROUNDS; r++) {
        uint64_t k = ks->enc[r];
        a = T8(TE, a) ^ k;
        b = T8(TE, b) ^ k;
        c = T8(TE, c) ^ k;
        d = T8(TE, d) ^ k;
    }
    s[0] = a, s[1] = b, s[2] = c, s[3] = d;
}

static inline void decrypt4(const schedule_t *ks, uint64_t s[4])
{
    uint64_t a = linear_inv(s[0]), b = linear_inv(s[1]), c = linear_inv(s[2]), d = linear_inv(s[3]);
    for (int r = ROUNDS - 1; r > 0; r--) {
        uint64_t k = ks->dec[r];
        a ^= k, b ^= k, c ^= k, d ^= k;
        a = T8(TD, a);
        b = T8(TD, b);
        c = T8(TD, c);
        d = T8(TD, d);
    }
    uint64_t k = ks->dec[0];
    s[0] = sb8_inv_all(a ^ k), s[1] = sb8_inv_all(b ^ k), s[2] = sb8_inv_all(c ^ k), s[3] = sb8_inv_all(d ^ k);
}

static inline uint64_t encrypt1(const schedule_t *ks, uint64_t a)
{
    for (int r = 0; r < ROUNDS; r++) a = T8(TE, a) ^ ks->enc[r];
    return a;
}

static inline uint64_t decrypt1(const schedule_t *ks, uint64_t a)
{
    a = linear_inv(a);
    for (int r = ROUNDS - 1; r > 0; r--) a = T8(TD, a ^ ks->dec[r]);
    return sb8_inv_all(a ^ ks->dec[0]);
}

/* ---- SSSE3 rounds: one cell a byte, so a round is a few byte shuffles ----------------------------------
 *
 * A block is one 128-bit register, byte i = cell i. SubCells is one PSHUFB into the S-box, the tweakey one
 * XOR, and ShiftRows + MixColumns three PSHUFB row selections XORed together (a selection index with the
 * top bit set gives a zero byte). Four blocks go in step.
 */
#if X86
#define SSSE3 __attribute__((target("ssse3")))

static uint8_t SR_A[16], SR_B[16], SR_C[16];    /* encryption: ShiftRows then MixColumns */
static uint8_t ISR_A[16], ISR_B[16], ISR_C[16]; /* decryption: MixColumns^-1 then ShiftRows^-1 */

static void build_shuffles(void)
{
    static const int SR[16] = {0, 1, 2, 3, 7, 4, 5, 6, 10, 11, 8, 9, 13, 14, 15, 12};
    /* MixColumns rows: m0 = r0^r2^r3, m1 = r0, m2 = r1^r2, m3 = r0^r2 (-1: nothing) */
    static const int ea[4] = {0, 0, 1, 0}, eb[4] = {2, -1, 2, 2}, ec[4] = {3, -1, -1, -1};
    /* inverse: r0 = m1, r1 = m1^m2^m3, r2 = m1^m3, r3 = m0^m3 */
    static const int da[4] = {1, 1, 1, 0}, db[4] = {-1, 2, 3, 3}, dc[4] = {-1, 3, -1, -1};
    int sr_inv[16];
    for (int i = 0; i < 16; i++) sr_inv[SR[i]] = i;
    for (int i = 0; i < 16; i++) {
        int row = i / 4, col = i % 4;
        SR_A[i] = (uint8_t)SR[4 * ea[row] + col];
        SR_B[i] = eb[row] < 0 ? 0x80 : (uint8_t)SR[4 * eb[row] + col];
        SR_C[i] = ec[row] < 0 ? 0x80 : (uint8_t)SR[4 * ec[row] + col];
        int k = sr_inv[i], r = k / 4, c = k % 4;
        ISR_A[i] = (uint8_t)(4 * da[r] + c);
        ISR_B[i] = db[r] < 0 ? 0x80 : (uint8_t)(4 * db[r] + c);
        ISR_C[i] = dc[r] < 0 ? 0x80 : (uint8_t)(4 * dc[r] + c);
    }
}

#define LOAD16(p) _mm_loadu_si128((const __m128i *)(p))

SSSE3 static inline __m128i to_cells(uint64_t block) /* block as loaded big-endian */
{
    __m128i x = _mm_cvtsi64_si128((long long)__builtin_bswap64(block));
    __m128i lo4 = _mm_set1_epi8(0x0f);
    return _mm_unpacklo_epi8(_mm_and_si128(_mm_srli_epi16(x, 4), lo4), _mm_and_si128(x, lo4));
}

SSSE3 static inline uint64_t from_cells(__m128i c)
{
    __m128i bytes = _mm_maddubs_epi16(c, _mm_set1_epi16(0x0110)); /* 16 * even cell + odd cell */
    return __builtin_bswap64((uint64_t)_mm_cvtsi128_si64(_mm_packus_epi16(bytes, bytes)));
}

#define XOR3(x, a, b, c)                                                                                   \
    _mm_xor_si128(_mm_xor_si128(_mm_shuffle_epi8(x, a), _mm_shuffle_epi8(x, b)), _mm_shuffle_epi8(x, c))

SSSE3 static void encrypt_n_ssse3(const schedule_t *ks, uint64_t *v, int n) /* n <= 4 */
{
    const __m128i sb = LOAD16(SBOX), a = LOAD16(SR_A), b = LOAD16(SR_B), c = LOAD16(SR_C);
    __m128i s[4];
    for (int j = 0; j < n; j++) s[j] = to_cells(v[j]);
    for (int r = 0; r < ROUNDS; r++) {
        const __m128i k = LOAD16(ks->cells[r]);
        for (int j = 0; j < 4; j++) {
            if (j >= n) break;
            __m128i x = _mm_xor_si128(_mm_shuffle_epi8(sb, s[j]), k);
            s[j] = XOR3(x, a, b, c);
        }
    }
    for (int j = 0; j < n; j++) v[j] = from_cells(s[j]);
}

SSSE3 static void decrypt_n_ssse3(const schedule_t *ks, uint64_t *v, int n)
{
    const __m128i sbi = LOAD16(SBOX_INV), a = LOAD16(ISR_A), b = LOAD16(ISR_B), c = LOAD16(ISR_C);
    __m128i s[4];
    for (int j = 0; j < n; j++) s[j] = to_cells(v[j]);
    for (int r = ROUNDS - 1; r >= 0; r--) {
        const __m128i k = LOAD16(ks->cells[r]);
        for (int j = 0; j < 4; j++) {
            if (j >= n) break;
            s[j] = _mm_shuffle_epi8(sbi, _mm_xor_si128(XOR3(s[j], a, b, c), k));
        }
    }
    for (int j = 0; j < n; j++) v[j] = from_cells(s[j]);
}

/* The four-wide bodies, with n fixed at 4 so the compiler unrolls the inner loops. */
SSSE3 static void encrypt4_ssse3(const schedule_t *ks, uint64_t v[4]) { encrypt_n_ssse3(ks, v, 4); }
SSSE3 static void decrypt4_ssse3(const schedule_t *ks, uint64_t v[4]) { decrypt_n_ssse3(ks, v, 4); }

static int cpu_has_ssse3(void)
{
    unsigned a, b, c, d;
    return __get_cpuid(1, &a, &b, &c, &d) && (c & (1u << 9));
}
#endif

/* The 4-block and 1-block kernels in use: SSSE3 when the CPU has it, else the tables. */
typedef void (*four_fn)(const schedule_t *, uint64_t *);
static void encrypt4_tables(const schedule_t *ks, uint64_t *v) { encrypt4(ks, v); }
static void decrypt4_tables(const schedule_t *ks, uint64_t *v) { decrypt4(ks, v); }
static four_fn enc4 = encrypt4_tables, dec4 = decrypt4_tables;

static void set_kernels(int simd)
{
    enc4 = encrypt4_tables, dec4 = decrypt4_tables;
#if X86
    if (simd && cpu_has_ssse3()) enc4 = encrypt4_ssse3, dec4 = decrypt4_ssse3;
#endif
    (void)simd;
}

/* Packed blocks in, packed blocks out, four at a time (a short tail is padded into one more group). */
static void bulk(four_fn four, const uint8_t *in, uint8_t *out, Py_ssize_t n, const schedule_t *ks)
{
    uint64_t v[4];
    for (Py_ssize_t i = 0; i < n; i += 4) {
        int m = n - i < 4 ? (int)(n - i) : 4;
        for (int j = 0; j < 4; j++) v[j] = j < m ? load_be(in + 8 * (i + j)) : 0;
        four(ks, v);
        for (int j = 0; j < m; j++) store_be(out + 8 * (i + j), v[j]);
    }
}

static void encrypt_blocks(const schedule_t *ks, const uint8_t *in, uint8_t *out, Py_ssize_t n)
{
    if (n == 1 && enc4 == encrypt4_tables) {
        store_be(out, encrypt1(ks, load_be(in)));
        return;
    }
    bulk(enc4, in, out, n, ks);
}

static void decrypt_blocks(const schedule_t *ks, const uint8_t *in, uint8_t *out, Py_ssize_t n)
{
    if (n == 1 && dec4 == decrypt4_tables) {
        store_be(out, decrypt1(ks, load_be(in)));
        return;
    }
    bulk(dec4, in, out, n, ks);
}

static inline uint64_t epoch_block(uint64_t epoch, uint64_t id_a) { return ((epoch & 0xffffff) << 40) | id_a; }

static void encrypt_epochs(const schedule_t *ks, uint64_t first, uint64_t id_a, uint8_t *out, Py_ssize_t n)
{
    uint64_t v[4];
    for (Py_ssize_t i = 0; i < n; i += 4) {
        int m = n - i < 4 ? (int)(n - i) : 4;
        for (int j = 0; j < 4; j++) v[j] = epoch_block(first + (uint64_t)(i + j), id_a);
        enc4(ks, v);
        for (int j = 0; j < m; j++) store_be(out + 8 * (i + j), v[j]);
    }
}

/* _use_simd(flag) -> bool: pick the SKINNY kernels (tests run both); returns whether SSSE3 is now used. */
static PyObject *py_use_simd(PyObject *mod, PyObject *arg)
{
    int want = PyObject_IsTrue(arg);
    if (want < 0) return NULL;
    set_kernels(want);
    return PyBool_FromLong(enc4 != encrypt4_tables);
}

/* ---- the Key type --------------------------------------------------------------------------------- */

typedef struct {
    PyObject_HEAD schedule_t ks;
} KeyObject;

static void wipe(void *p, size_t n)
{
    volatile uint8_t *v = (volatile uint8_t *)p;
    while (n--) *v++ = 0;
}

static int Key_init(KeyObject *self, PyObject *args, PyObject *kwds)
{
    Py_buffer key;
    if (kwds != NULL && PyDict_GET_SIZE(kwds) != 0) {
        PyErr_SetString(PyExc_TypeError, "Key() takes no keyword arguments");
        return -1;
    }
    if (!PyArg_ParseTuple(args, "y*:Key", &key)) return -1;
    if (key.len != KEY_SIZE) {
        PyBuffer_Release(&key);
        PyErr_SetString(PyExc_ValueError, "SKINNY-64-192 key must be 24 bytes");
        return -1;
    }
    key_schedule(&self->ks, (const uint8_t *)key.buf);
    PyBuffer_Release(&key);
    return 0;
}

static void Key_dealloc(KeyObject *self)
{
    wipe(&self->ks, sizeof self->ks);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

typedef void (*bulk_fn)(const schedule_t *, const uint8_t *, uint8_t *, Py_ssize_t);

static PyObject *run_bulk(KeyObject *self, PyObject *arg, bulk_fn fn)
{
    Py_buffer in;
    if (PyObject_GetBuffer(arg, &in, PyBUF_SIMPLE) < 0) return NULL;
    if (in.len % BLOCK) {
        PyBuffer_Release(&in);
        PyErr_SetString(PyExc_ValueError, "data must be a whole number of 8-byte blocks");
        return NULL;
    }
    PyObject *out = PyBytes_FromStringAndSize(NULL, in.len);
    if (out != NULL) {
        Py_ssize_t n = in.len / BLOCK;
        uint8_t *dst = (uint8_t *)PyBytes_AS_STRING(out);
        if (n >= GIL_THRESHOLD) {
            Py_BEGIN_ALLOW_THREADS fn(&self->ks, (const uint8_t *)in.buf, dst, n);
            Py_END_ALLOW_THREADS
        } else {
            fn(&self->ks, (const uint8_t *)in.buf, dst, n);
        }
    }
    PyBuffer_Release(&in);
    return out;
}

static PyObject *Key_encrypt(KeyObject *self, PyObject *arg) { return run_bulk(self, arg, encrypt_blocks); }
static PyObject *Key_decrypt(KeyObject *self, PyObject *arg) { return run_bulk(self, arg, decrypt_blocks); }

static PyObject *Key_encrypt_epochs(KeyObject *self, PyObject *args)
{
    unsigned long long first;
    Py_ssize_t count;
    Py_buffer id;
    if (!PyArg_ParseTuple(args, "Kny*:encrypt_epochs", &first, &count, &id)) return NULL;
    if (id.len != ID_A_SIZE || count < 0 || count > ((Py_ssize_t)1 << 24)) {
        PyBuffer_Release(&id);
        PyErr_SetString(PyExc_ValueError, "bad epoch count or id_A");
        return NULL;
    }
    uint64_t id_a = 0;
    for (int i = 0; i < ID_A_SIZE; i++) id_a = (id_a << 8) | ((const uint8_t *)id.buf)[i];
    PyBuffer_Release(&id);
    PyObject *out = PyBytes_FromStringAndSize(NULL, count * BLOCK);
    if (out == NULL) return NULL;
    uint8_t *dst = (uint8_t *)PyBytes_AS_STRING(out);
    if (count >= GIL_THRESHOLD) {
        Py_BEGIN_ALLOW_THREADS encrypt_epochs(&self->ks, first, id_a, dst, count);
        Py_END_ALLOW_THREADS
    } else {
        encrypt_epochs(&self->ks, first, id_a, dst, count);
    }
    return out;
}

static PyMethodDef Key_methods[] = {
    {"encrypt", (PyCFunction)Key_encrypt, METH_O, "encrypt(blocks) -> bytes: n packed 8-byte blocks."},
    {"decrypt", (PyCFunction)Key_decrypt, METH_O, "decrypt(blocks) -> bytes: n packed 8-byte blocks."},
    {"encrypt_epochs", (PyCFunction)Key_encrypt_epochs, METH_VARARGS,
     "encrypt_epochs(first_epoch, count, id_a) -> bytes: EBIDs of epochId_24 | id_A for consecutive epochs."},
    {NULL, NULL, 0, NULL},
};

static PyObject *Key_repr(PyObject *self) { return PyUnicode_FromString("<SKINNY-64-192 key>"); }

static PyTypeObject KeyType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "crypto_backend.protocol._skinny.Key",
    .tp_doc = PyDoc_STR("Key(k: bytes) -- a 24-byte SKINNY-64-192 key with its round tweakeys precomputed."),
    .tp_basicsize = sizeof(KeyObject),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)Key_init,
    .tp_dealloc = (destructor)Key_dealloc,
    .tp_methods = Key_methods,
    .tp_repr = Key_repr,
};

/* ---- helpers for the bundle: AES input blocks and the tuples JSON ---------------------------------- */

static PyObject *pad16(PyObject *mod, PyObject *arg)
{
    Py_buffer in;
    if (PyObject_GetBuffer(arg, &in, PyBUF_SIMPLE) < 0) return NULL;
    if (in.len % BLOCK) {
        PyBuffer_Release(&in);
        PyErr_SetString(PyExc_ValueError, "data must be a whole number of 8-byte blocks");
        return NULL;
    }
    PyObject *out = PyBytes_FromStringAndSize(NULL, in.len * 2);
    if (out != NULL) {
        uint8_t *dst = (uint8_t *)PyBytes_AS_STRING(out);
        const uint8_t *src = (const uint8_t *)in.buf;
        for (Py_ssize_t i = 0; i < in.len / BLOCK; i++) {
            memcpy(dst + 16 * i, src + 8 * i, 8);
            memset(dst + 16 * i + 8, 0, 8);
        }
    }
    PyBuffer_Release(&in);
    return out;
}

static const char B64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

static char *b64_8(char *p, const uint8_t *s) /* 8 bytes -> 12 chars, one '=' */
{
    for (int i = 0; i < 6; i += 3) {
        uint32_t v = ((uint32_t)s[i] << 16) | ((uint32_t)s[i + 1] << 8) | s[i + 2];
        *p++ = B64[v >> 18], *p++ = B64[(v >> 12) & 63], *p++ = B64[(v >> 6) & 63], *p++ = B64[v & 63];
    }
    uint32_t v = ((uint32_t)s[6] << 16) | ((uint32_t)s[7] << 8);
    *p++ = B64[v >> 18], *p++ = B64[(v >> 12) & 63], *p++ = B64[(v >> 6) & 63], *p++ = '=';
    return p;
}

static char *put(char *p, const char *lit, size_t n)
{
    memcpy(p, lit, n);
    return p + n;
}

#define PUT(p, lit) put((p), (lit), sizeof(lit) - 1)

static char *put_uint(char *p, uint64_t v)
{
    char tmp[24];
    int n = 0;
    do tmp[n++] = (char)('0' + v % 10), v /= 10;
    while (v);
    while (n) *p++ = tmp[--n];
    return p;
}

#define J_OPEN "{\"epochId\":"
#define J_KEY ",\"key\":{\"ebid\":\""
#define J_ECC "\",\"ecc\":\""
#define J_CLOSE "\"}}"
/* One entry: the literals, at most 20 digits, 12 + 4 base64 characters, and a comma. */
#define ENTRY_MAX (sizeof(J_OPEN J_KEY J_ECC J_CLOSE) - 1 + 20 + 12 + 4 + 1)

static PyObject *tuples_json(PyObject *mod, PyObject *args)
{
    unsigned long long first;
    Py_buffer ebids, eccs;
    if (!PyArg_ParseTuple(args, "Ky*y*:tuples_json", &first, &ebids, &eccs)) return NULL;
    PyObject *out = NULL;
    Py_ssize_t n = eccs.len;
    if (ebids.len != n * BLOCK) {
        PyErr_SetString(PyExc_ValueError, "EBIDs and ECCs differ in number");
        goto done;
    }
    if (n > (PY_SSIZE_T_MAX - 2) / (Py_ssize_t)ENTRY_MAX) {
        PyErr_NoMemory();
        goto done;
    }
    out = PyBytes_FromStringAndSize(NULL, 2 + n * (Py_ssize_t)ENTRY_MAX);
    if (out == NULL) goto done;
    char *start = PyBytes_AS_STRING(out), *p = start;
    const uint8_t *e = (const uint8_t *)ebids.buf, *c = (const uint8_t *)eccs.buf;
    *p++ = '[';
    for (Py_ssize_t i = 0; i < n; i++) {
        if (i) *p++ = ',';
        p = PUT(p, J_OPEN);
        p = put_uint(p, first + (uint64_t)i);
        p = PUT(p, J_KEY);
        p = b64_8(p, e + 8 * i);
        p = PUT(p, J_ECC);
        *p++ = B64[c[i] >> 2], *p++ = B64[(c[i] & 3) << 4], *p++ = '=', *p++ = '=';
        p = PUT(p, J_CLOSE);
    }
    *p++ = ']';
    if (_PyBytes_Resize(&out, p - start) < 0) out = NULL;
done:
    PyBuffer_Release(&ebids);
    PyBuffer_Release(&eccs);
    return out;
}

/* ---- HMAC-SHA256 over one-block messages (HELLO and request MACs, PROTOCOL.md sections 4 and 5) ------
 *
 * FIPS 180-4 SHA-256 compression, portable C. An HMAC key (at most one block) is turned into its inner and
 * outer chaining states once; a message of at most 55 bytes then costs two compressions. The batch HELLO
 * check computes the states once per K_A,mac for all HELLOs of a contact. Checked against hashlib/hmac.
 */

static const uint32_t K256[64] = {
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
    0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
    0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
    0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
    0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
    0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
    0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
    0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2,
};
static const uint32_t SHA256_IV[8] = {0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a,
                                      0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19};

static inline uint32_t rotr32(uint32_t x, int n) { return (x >> n) | (x << (32 - n)); }

static void sha256_compress(uint32_t h[8], const uint8_t block[64])
{
    uint32_t w[64];
    for (int i = 0; i < 16; i++)
        w[i] = ((uint32_t)block[4 * i] << 24) | ((uint32_t)block[4 * i + 1] << 16) |
               ((uint32_t)block[4 * i + 2] << 8) | block[4 * i + 3];
    for (int i = 16; i < 64; i++) {
        uint32_t s0 = rotr32(w[i - 15], 7) ^ rotr32(w[i - 15], 18) ^ (w[i - 15] >> 3);
        uint32_t s1 = rotr32(w[i - 2], 17) ^ rotr32(w[i - 2], 19) ^ (w[i - 2] >> 10);
        w[i] = w[i - 16] + s0 + w[i - 7] + s1;
    }
    uint32_t a = h[0], b = h[1], c = h[2], d = h[3], e = h[4], f = h[5], g = h[6], hh = h[7];
    for (int i = 0; i < 64; i++) {
        uint32_t t1 = hh + (rotr32(e, 6) ^ rotr32(e, 11) ^ rotr32(e, 25)) + ((e & f) ^ (~e & g)) + K256[i] + w[i];
        uint32_t t2 = (rotr32(a, 2) ^ rotr32(a, 13) ^ rotr32(a, 22)) + ((a & b) ^ (a & c) ^ (b & c));
        hh = g, g = f, f = e, e = d + t1, d = c, c = b, b = a, a = t1 + t2;
    }
    h[0] += a, h[1] += b, h[2] += c, h[3] += d, h[4] += e, h[5] += f, h[6] += g, h[7] += hh;
}

/* The same compression with the x86 SHA extensions, chosen at import when the CPU has them. */
#if X86
#define HAVE_SHA_NI_CODE 1

__attribute__((target("sha,sse4.1,ssse3"))) static void sha256_compress_ni(uint32_t h[8], const uint8_t block[64])
{
    const __m128i bswap = _mm_set_epi64x(0x0c0d0e0f08090a0bULL, 0x0405060700010203ULL);
    __m128i dcba = _mm_shuffle_epi32(_mm_loadu_si128((const __m128i *)&h[0]), 0xB1); /* CDAB */
    __m128i efgh = _mm_shuffle_epi32(_mm_loadu_si128((const __m128i *)&h[4]), 0x1B); /* EFGH */
    __m128i abef = _mm_alignr_epi8(dcba, efgh, 8);
    __m128i cdgh = _mm_blend_epi16(efgh, dcba, 0xF0);
    const __m128i abef0 = abef, cdgh0 = cdgh;
    __m128i w[4];
    for (int i = 0; i < 4; i++) w[i] = _mm_shuffle_epi8(_mm_loadu_si128((const __m128i *)(block + 16 * i)), bswap);
    for (int i = 0; i < 16; i++) {
        if (i >= 4) { /* w[i] from w[i-4], w[i-3], w[i-2], w[i-1] (four words each) */
            __m128i x0 = w[i & 3], x1 = w[(i + 1) & 3], x2 = w[(i + 2) & 3], x3 = w[(i + 3) & 3];
            __m128i t = _mm_add_epi32(_mm_sha256msg1_epu32(x0, x1), _mm_alignr_epi8(x3, x2, 4));
            w[i & 3] = _mm_sha256msg2_epu32(t, x3);
        }
        __m128i m = _mm_add_epi32(w[i & 3], _mm_loadu_si128((const __m128i *)&K256[4 * i]));
        cdgh = _mm_sha256rnds2_epu32(cdgh, abef, m);
        abef = _mm_sha256rnds2_epu32(abef, cdgh, _mm_shuffle_epi32(m, 0x0E));
    }
    abef = _mm_add_epi32(abef, abef0);
    cdgh = _mm_add_epi32(cdgh, cdgh0);
    __m128i feba = _mm_shuffle_epi32(abef, 0x1B);
    __m128i dchg = _mm_shuffle_epi32(cdgh, 0xB1);
    _mm_storeu_si128((__m128i *)&h[0], _mm_blend_epi16(feba, dchg, 0xF0));
    _mm_storeu_si128((__m128i *)&h[4], _mm_alignr_epi8(dchg, feba, 8));
}

static int cpu_has_sha_ni(void)
{
    unsigned a, b, c, d;
    if (!__get_cpuid(1, &a, &b, &c, &d) || !(c & (1u << 19)) || !(c & (1u << 9))) return 0; /* SSE4.1, SSSE3 */
    if (!__get_cpuid_count(7, 0, &a, &b, &c, &d)) return 0;
    return (b >> 29) & 1; /* SHA */
}
#else
#define HAVE_SHA_NI_CODE 0
#endif

static void (*compress)(uint32_t h[8], const uint8_t block[64]) = sha256_compress;

static int sha_ni_available(void)
{
#if HAVE_SHA_NI_CODE
    return cpu_has_sha_ni();
#else
    return 0;
#endif
}

/* _use_sha_ni(flag) -> bool: pick the compression (tests run both); returns whether SHA-NI is now used. */
static PyObject *py_use_sha_ni(PyObject *mod, PyObject *arg)
{
    int want = PyObject_IsTrue(arg);
    if (want < 0) return NULL;
#if HAVE_SHA_NI_CODE
    compress = (want && cpu_has_sha_ni()) ? sha256_compress_ni : sha256_compress;
    return PyBool_FromLong(compress == sha256_compress_ni);
#else
    compress = sha256_compress;
    Py_RETURN_FALSE;
#endif
}

typedef struct {
    uint32_t inner[8], outer[8];
} hmac_key_t;

static void hmac_key(hmac_key_t *k, const uint8_t *key, size_t len) /* len <= 64 */
{
    uint8_t block[64];
    memcpy(k->inner, SHA256_IV, sizeof SHA256_IV);
    memcpy(k->outer, SHA256_IV, sizeof SHA256_IV);
    for (size_t i = 0; i < 64; i++) block[i] = (uint8_t)((i < len ? key[i] : 0) ^ 0x36);
    compress(k->inner, block);
    for (size_t i = 0; i < 64; i++) block[i] ^= 0x36 ^ 0x5c;
    compress(k->outer, block);
    wipe(block, sizeof block);
}

static void put_be32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 24), p[1] = (uint8_t)(v >> 16), p[2] = (uint8_t)(v >> 8), p[3] = (uint8_t)v;
}

/* One padded block: msg (at most 55 bytes) after one 64-byte block already hashed. */
static void last_block(uint8_t block[64], const uint8_t *msg, size_t len)
{
    memcpy(block, msg, len);
    block[len] = 0x80;
    memset(block + len + 1, 0, 64 - len - 1);
    uint64_t bits = (64 + (uint64_t)len) * 8;
    put_be32(block + 56, (uint32_t)(bits >> 32));
    put_be32(block + 60, (uint32_t)bits);
}

static void hmac_short(const hmac_key_t *k, const uint8_t *msg, size_t len, uint8_t out[32])
{
    uint8_t block[64];
    uint32_t h[8];
    memcpy(h, k->inner, sizeof h);
    last_block(block, msg, len);
    compress(h, block);
    for (int i = 0; i < 8; i++) put_be32(block + 4 * i, h[i]);
    memcpy(h, k->outer, sizeof h);
    last_block(block, block, 32);
    compress(h, block);
    for (int i = 0; i < 8; i++) put_be32(out + 4 * i, h[i]);
}

#define HMAC_MAX_MSG 55

static PyObject *py_hmac_sha256(PyObject *mod, PyObject *args)
{
    Py_buffer key, msg;
    if (!PyArg_ParseTuple(args, "y*y*:hmac_sha256", &key, &msg)) return NULL;
    PyObject *out = NULL;
    if (key.len > 64 || msg.len > HMAC_MAX_MSG) {
        PyErr_SetString(PyExc_ValueError, "key over 64 bytes or message over 55 bytes");
    } else {
        hmac_key_t k;
        uint8_t mac[32];
        hmac_key(&k, (const uint8_t *)key.buf, (size_t)key.len);
        hmac_short(&k, (const uint8_t *)msg.buf, (size_t)msg.len, mac);
        out = PyBytes_FromStringAndSize((const char *)mac, 32);
        wipe(&k, sizeof k);
    }
    PyBuffer_Release(&key);
    PyBuffer_Release(&msg);
    return out;
}

/* The HELLO MAC of one HELLO: HMAC-SHA256(K_A,mac, 0x01 | ECC | EBID | Time)[0:5] (PROTOCOL.md section 4). */
static int hello_mac_of(PyObject *args, const char *fmt, uint8_t mac[32], Py_buffer *extra)
{
    Py_buffer key, ecc, ebid, t;
    int ok = 0;
    if (extra != NULL ? !PyArg_ParseTuple(args, fmt, &key, &ecc, &ebid, &t, extra)
                      : !PyArg_ParseTuple(args, fmt, &key, &ecc, &ebid, &t))
        return 0;
    if (key.len != 32 || ecc.len != 1 || ebid.len != 8 || t.len != 2) {
        PyErr_SetString(PyExc_ValueError, "bad HELLO field sizes");
    } else {
        hmac_key_t k;
        uint8_t msg[12];
        msg[0] = 0x01; /* SALT_HELLO */
        msg[1] = *(const uint8_t *)ecc.buf;
        memcpy(msg + 2, ebid.buf, 8);
        memcpy(msg + 10, t.buf, 2);
        hmac_key(&k, (const uint8_t *)key.buf, 32);
        hmac_short(&k, msg, 12, mac);
        wipe(&k, sizeof k);
        ok = 1;
    }
    PyBuffer_Release(&key);
    PyBuffer_Release(&ecc);
    PyBuffer_Release(&ebid);
    PyBuffer_Release(&t);
    if (!ok && extra != NULL) PyBuffer_Release(extra);
    return ok;
}

static PyObject *py_hello_mac(PyObject *mod, PyObject *args)
{
    uint8_t mac[32];
    if (!hello_mac_of(args, "y*y*y*y*:hello_mac", mac, NULL)) return NULL;
    return PyBytes_FromStringAndSize((const char *)mac, 5);
}

static PyObject *py_verify_hello_mac(PyObject *mod, PyObject *args)
{
    uint8_t mac[32], diff = 0;
    Py_buffer given;
    if (!hello_mac_of(args, "y*y*y*y*y*:verify_hello_mac", mac, &given)) return NULL;
    int right_size = given.len == 5;
    for (int j = 0; j < 5 && right_size; j++) diff |= (uint8_t)(mac[j] ^ ((const uint8_t *)given.buf)[j]);
    PyBuffer_Release(&given);
    return PyBool_FromLong(right_size && diff == 0);
}

/* The 2-byte HELLO time of an int (low 16 bits) or of 2 bytes; -1 with an exception set otherwise. */
static int hello_time(PyObject *t, uint8_t out[2])
{
    if (PyLong_CheckExact(t)) {
        unsigned long long v = PyLong_AsUnsignedLongLongMask(t);
        if (v == (unsigned long long)-1 && PyErr_Occurred()) return -1;
        out[0] = (uint8_t)(v >> 8), out[1] = (uint8_t)v;
        return 0;
    }
    if (PyBytes_CheckExact(t) && PyBytes_GET_SIZE(t) == 2) {
        memcpy(out, PyBytes_AS_STRING(t), 2);
        return 0;
    }
    PyErr_SetString(PyExc_TypeError, "HELLO time must be an int or 2 bytes");
    return -1;
}

/* verify_hello_macs(k_mac, ecc_ebid (9 bytes), times16 (ints or 2-byte bytes), macs) -> list[bool]
 * A MAC that is not 5 bytes is invalid (False); a bad time raises. The HMACs run without the GIL. */
static PyObject *py_verify_hello_macs(PyObject *mod, PyObject *args)
{
    Py_buffer key, head;
    PyObject *times_arg, *macs_arg, *times = NULL, *macs = NULL, *out = NULL;
    uint8_t *buf = NULL;
    if (!PyArg_ParseTuple(args, "y*y*OO:verify_hello_macs", &key, &head, &times_arg, &macs_arg)) return NULL;
    if (key.len > 64 || head.len != 9) {
        PyErr_SetString(PyExc_ValueError, "bad K_A,mac or ECC|EBID size");
        goto done;
    }
    times = PySequence_Fast(times_arg, "HELLO times must be a sequence");
    macs = times ? PySequence_Fast(macs_arg, "HELLO MACs must be a sequence") : NULL;
    if (macs == NULL) goto done;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(times);
    if (PySequence_Fast_GET_SIZE(macs) != n) {
        PyErr_SetString(PyExc_ValueError, "HELLO times and MACs differ in number");
        goto done;
    }
    buf = PyMem_Malloc((size_t)n * 8 + 1); /* per HELLO: time (2), MAC (5), verdict (1) */
    if (buf == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    uint8_t *t2 = buf, *m5 = buf + 2 * n, *ok = buf + 7 * n;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *mac = PySequence_Fast_GET_ITEM(macs, i);
        if (hello_time(PySequence_Fast_GET_ITEM(times, i), t2 + 2 * i) < 0) goto done;
        ok[i] = PyBytes_CheckExact(mac) && PyBytes_GET_SIZE(mac) == 5;
        if (ok[i]) memcpy(m5 + 5 * i, PyBytes_AS_STRING(mac), 5);
        else memset(m5 + 5 * i, 0, 5);
    }
    hmac_key_t k;
    uint8_t msg[12], mac[32];
    hmac_key(&k, (const uint8_t *)key.buf, (size_t)key.len);
    msg[0] = 0x01; /* SALT_HELLO */
    memcpy(msg + 1, head.buf, 9);
    Py_BEGIN_ALLOW_THREADS for (Py_ssize_t i = 0; i < n; i++)
    {
        msg[10] = t2[2 * i], msg[11] = t2[2 * i + 1];
        hmac_short(&k, msg, 12, mac);
        uint8_t diff = 0;
        for (int j = 0; j < 5; j++) diff |= (uint8_t)(mac[j] ^ m5[5 * i + j]);
        ok[i] = (uint8_t)(ok[i] & (diff == 0));
    }
    Py_END_ALLOW_THREADS wipe(&k, sizeof k);
    out = PyList_New(n);
    for (Py_ssize_t i = 0; out != NULL && i < n; i++) {
        PyObject *v = ok[i] ? Py_True : Py_False;
        Py_INCREF(v);
        PyList_SET_ITEM(out, i, v);
    }
done:
    PyMem_Free(buf);
    Py_XDECREF(times);
    Py_XDECREF(macs);
    PyBuffer_Release(&key);
    PyBuffer_Release(&head);
    return out;
}

static PyMethodDef module_methods[] = {
    {"pad16", pad16, METH_O, "pad16(ebids) -> bytes: each 8-byte block followed by 8 zero bytes."},
    {"hmac_sha256", py_hmac_sha256, METH_VARARGS,
     "hmac_sha256(key, msg) -> 32 bytes, for a key of at most 64 and a message of at most 55 bytes."},
    {"hello_mac", py_hello_mac, METH_VARARGS, "hello_mac(k_mac, ecc, ebid, time16) -> 5 bytes."},
    {"verify_hello_mac", py_verify_hello_mac, METH_VARARGS,
     "verify_hello_mac(k_mac, ecc, ebid, time16, mac) -> bool, in constant time."},
    {"verify_hello_macs", py_verify_hello_macs, METH_VARARGS,
     "verify_hello_macs(k_mac, ecc_ebid, times16, macs) -> list[bool]: one verdict per HELLO."},
    {"_use_simd", py_use_simd, METH_O, "_use_simd(flag) -> bool: for tests; SSSE3 is on by default."},
    {"_use_sha_ni", py_use_sha_ni, METH_O, "_use_sha_ni(flag) -> bool: for tests; SHA-NI is on by default."},
    {"tuples_json", tuples_json, METH_VARARGS,
     "tuples_json(first_epoch, ebids, eccs) -> bytes: the compact tuples JSON (PROTOCOL.md section 3)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_skinny", "Native bulk SKINNY-64-192 and tuples formatting.", -1, module_methods,
};

PyMODINIT_FUNC PyInit__skinny(void)
{
    build_tables();
#if X86
    build_shuffles();
#endif
    set_kernels(1);
    if (sha_ni_available()) {
#if HAVE_SHA_NI_CODE
        compress = sha256_compress_ni;
#endif
    }
    if (PyType_Ready(&KeyType) < 0) return NULL;
    PyObject *m = PyModule_Create(&module);
    if (m == NULL) return NULL;
    Py_INCREF(&KeyType);
    if (PyModule_AddObject(m, "Key", (PyObject *)&KeyType) < 0) {
        Py_DECREF(&KeyType);
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
