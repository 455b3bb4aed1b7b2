/* The common batch's payloads parsed into columns in one C pass (driftline.operators.struct_decode
 * falls back to msgspec without it).
 *
 * predictions(values, max_bytes) and labels(values, max_bytes) read a batch of JSON payloads of the
 * common shape straight into a list per field, in one pass over each payload's bytes: no struct
 * and no dict per event, and a batch of one feature layout (the same keys in the same order in
 * every event, each value a JSON scalar) as one tuple of values per event, and also as a list per
 * feature with the kinds of its values and its floats as doubles (what columns.py's feature checks
 * would otherwise find by walking the rows). They return what struct_decode's msgspec pass returns
 * for such a batch, values and types alike, or None where they do not take the batch: they take a
 * subset of what that pass takes and leave the rest to it.
 *
 * Taken: every payload a JSON object of the schema's fields only, each named once, each of its
 * type and range (names of 1..256 characters; the event time an integer in the schema's range; the
 * output object's label/score/value; latency >= 0; a segment of at most 16 distinct names), every
 * payload naming the same optional fields, strings without escapes in valid UTF-8, integers of at
 * most 18 digits, floats within float range. Every other batch (an escape, a duplicate
 * key, a big integer, nested feature values, a feature layout that changes, ...) is None, as are
 * the cases where the msgspec pass makes a batch's feature maps dicts: an empty first map, a quote
 * followed by a blank or a string opening with a colon inside the feature objects.
 *
 * Floats: a decimal of at most 2**53 in its digits and a power of ten within +-22 is one exact
 * multiplication or division (correctly rounded, Clinger's fast path); one of at most 19 digits
 * otherwise a 128-bit product (Eisel and Lemire's fast path, eisel_lemire below) where that decides
 * it; any other through CPython's correctly rounded PyOS_string_to_double: the double closest to
 * the text each way.
 *
 * native_block(values, keys, kinds, headers) reads a batch of JSON objects of one key order (the
 * outcomes topic's messages), native_sink_message(value, layout_of) a sink message of the columns
 * form, straight into the ClickHouse Native blocks the sink's writer would insert for them, with
 * the same number parsing (see their section below).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <float.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

#define MAX_NAME 256
#define MAX_SEGMENT 16
#define MAX_EPOCH_MS 253402300799999LL
#define MAX_INT_DIGITS 18

typedef struct {
    const unsigned char *p, *end;
} Cursor;

/* A value's failure: 0 with no exception (the batch is not taken), or 0 with one (out of memory). */
#define FAIL 0

static const double POW10[] = {1e0,  1e1,  1e2,  1e3,  1e4,  1e5,  1e6,  1e7,  1e8,  1e9,  1e10, 1e11,
                               1e12, 1e13, 1e14, 1e15, 1e16, 1e17, 1e18, 1e19, 1e20, 1e21, 1e22};

/* ---- floats of many digits: Eisel and Lemire's fast path ----
 * A decimal w * 10**q with w of at most 19 digits, beyond Clinger's case (w > 2**53 or |q| > 22:
 * the 16-17 digits a program's computed floats print with), is w times a 128-bit approximation of
 * 5**q (normalised to its top bit, with its power of two): the product's top 54 bits and the sign
 * of what lies below them decide the correctly rounded double unless the bits below are within
 * the approximation's error (2 units of the product's 128th bit) of a rounding boundary. There,
 * and outside the normal range, the caller takes CPython's correctly rounded conversion. */
#define POW5_LOW (-342) /* below: w * 10**q under the normal range for any 19-digit w */
#define POW5_HIGH 308   /* above: beyond float range */
#define POW5_COUNT (POW5_HIGH - POW5_LOW + 1)
#ifdef __SIZEOF_INT128__
typedef unsigned __int128 u128;
static uint64_t pow5_high[POW5_COUNT], pow5_low[POW5_COUNT]; /* 5**q's top 128 bits, normalised */
static int pow5_shift[POW5_COUNT]; /* q plus the power of two 5**q is that times */
#define WIDE_WORDS 16 /* 1024 bits: 5**308 and 2**1023 / 5**342 with 128 bits to spare */

/* The top 128 bits of the `words`-word number `x` (little-endian words, top word nonzero), and
 * how many bits lie below them (negative: shifted up to fill 128). */
static void top_bits(const uint64_t *x, int words, uint64_t *high, uint64_t *low, int *below) {
    int bits = 64 * words - __builtin_clzll(x[words - 1]);
    int shift = bits - 128;
    *below = shift;
    uint64_t out[2] = {0, 0};
    for (int k = 0; k < 128; k++) { /* (bit by bit: 651 numbers once, at import) */
        int from = shift + k;
        if (from >= 0 && (x[from / 64] >> (from % 64)) & 1) out[k / 64] |= UINT64_C(1) << (k % 64);
    }
    *high = out[1];
    *low = out[0];
}

/* The table, exact: 5**q multiplied up word by word (truncated to its top bits); 5**-q as
 * floor(2**1023 / 5**-q) divided down (rounded up to its top bits: the true quotient is never a
 * whole number). */
static void pow5_init(void) {
    uint64_t x[WIDE_WORDS] = {1};
    int words = 1;
    for (int q = 0; q <= POW5_HIGH; q++) {
        if (q > 0) {
            uint64_t carry = 0;
            for (int k = 0; k < words; k++) {
                u128 v = (u128)x[k] * 5 + carry;
                x[k] = (uint64_t)v;
                carry = (uint64_t)(v >> 64);
            }
            if (carry) x[words++] = carry;
        }
        int below;
        top_bits(x, words, &pow5_high[q - POW5_LOW], &pow5_low[q - POW5_LOW], &below);
        pow5_shift[q - POW5_LOW] = q + below;
    }
    memset(x, 0, sizeof x);
    x[WIDE_WORDS - 1] = UINT64_C(1) << 63; /* 2**1023 */
    words = WIDE_WORDS;
    for (int q = -1; q >= POW5_LOW; q--) {
        uint64_t rest = 0;
        for (int k = words - 1; k >= 0; k--) {
            u128 v = ((u128)rest << 64) | x[k];
            x[k] = (uint64_t)(v / 5);
            rest = (uint64_t)(v % 5);
        }
        while (x[words - 1] == 0) words--;
        int below;
        uint64_t high, low;
        top_bits(x, words, &high, &low, &below);
        if (++low == 0 && ++high == 0) { /* (rounded up past 128 bits: the largest instead) */
            high = low = UINT64_MAX;
        }
        pow5_high[q - POW5_LOW] = high;
        pow5_low[q - POW5_LOW] = low;
        pow5_shift[q - POW5_LOW] = q + below - 1023;
    }
}

/* w * 10**q (w > 0) as the closest double, 0 where this path does not decide it. */
static int eisel_lemire(uint64_t w, long q, double *out) {
    if (w == 0 || q < POW5_LOW || q > POW5_HIGH) return 0;
    size_t at = (size_t)(q - POW5_LOW);
    int zeros = __builtin_clzll(w);
    uint64_t wide = w << zeros;
    u128 product = (u128)wide * pow5_high[at];
    product += (uint64_t)(((u128)wide * pow5_low[at]) >> 64); /* (cannot carry out of 128 bits) */
    uint64_t high = (uint64_t)(product >> 64), low = (uint64_t)product;
    int shift = 9 + (int)(high >> 63); /* the top 54 bits: 53 and the rounding bit */
    uint64_t rest = high & ((UINT64_C(1) << shift) - 1);
    if ((rest == 0 && low < 2) || (rest == (UINT64_C(1) << shift) - 1 && low > UINT64_MAX - 2)) return 0;
    uint64_t top = high >> shift;
    uint64_t mantissa = (top >> 1) + (top & 1); /* (what lies below is never 0: never a tie) */
    int exponent = shift + 129 - zeros + pow5_shift[at];
    if (mantissa == UINT64_C(1) << 53) {
        mantissa >>= 1;
        exponent++;
    }
    if (exponent + 52 + 1023 < 1 || exponent + 52 + 1023 > 2046) return 0; /* subnormal or beyond */
    *out = ldexp((double)mantissa, exponent);
    return 1;
}
#else
static void pow5_init(void) {}
static int eisel_lemire(uint64_t w, long q, double *out) {
    (void)w, (void)q, (void)out;
    return 0;
}
#endif

static inline void skip_blanks(Cursor *c) {
    while (c->p < c->end && (*c->p == ' ' || *c->p == '\t' || *c->p == '\n' || *c->p == '\r')) c->p++;
}

static inline int eat(Cursor *c, unsigned char ch) {
    skip_blanks(c);
    if (c->p < c->end && *c->p == ch) {
        c->p++;
        return 1;
    }
    return 0;
}

static inline int peek(Cursor *c) {
    skip_blanks(c);
    return c->p < c->end ? *c->p : -1;
}

/* A string without escapes: its bytes at *s, *n of them, *ascii whether all are below 0x80; the
 * cursor after its closing quote. 0 at an escape, a control character or no closing quote. */
static int scan_string(Cursor *c, const unsigned char **s, Py_ssize_t *n, int *ascii) {
    skip_blanks(c);
    if (c->p >= c->end || *c->p != '"') return FAIL;
    const unsigned char *start = c->p + 1, *q = start;
    unsigned char high = 0;
    while (q < c->end) {
        unsigned char b = *q;
        if (b == '"') {
            *s = start;
            *n = q - start;
            *ascii = !high;
            c->p = q + 1;
            return 1;
        }
        if (b == '\\' || b < 0x20) return FAIL;
        high |= b & 0x80;
        q++;
    }
    return FAIL;
}

/* The str of a scanned string; NULL with no exception where it is not valid UTF-8. */
static PyObject *text(const unsigned char *s, Py_ssize_t n, int ascii) {
    if (ascii) {
        PyObject *out = PyUnicode_New(n, 127);
        if (out != NULL) memcpy(PyUnicode_DATA(out), s, (size_t)n);
        return out;
    }
    PyObject *out = PyUnicode_DecodeUTF8((const char *)s, n, "strict");
    if (out == NULL && PyErr_ExceptionMatches(PyExc_UnicodeDecodeError)) PyErr_Clear();
    return out;
}

/* The strs a batch repeats (model ids, versions, categories, class labels) made once: a str per
 * distinct ASCII text in a direct-mapped table, cleared after each batch (`strings_clear`). Every
 * event of a model then carries the same objects, so the many look-ups, groupings and encodings
 * downstream hash each once and compare by identity, and a batch holds a few objects, not one per
 * value. A text of another slot's hash replaces it: at worst (all distinct) a str per value again. */
#define SHARED_SLOTS 256
#define SHARED_LONGEST 64
static PyObject *shared[SHARED_SLOTS];

static PyObject *shared_text(const unsigned char *s, Py_ssize_t n, int ascii) {
    if (!ascii || n > SHARED_LONGEST) return text(s, n, ascii);
    uint32_t h = 2166136261u; /* FNV-1a */
    for (Py_ssize_t i = 0; i < n; i++) h = (h ^ s[i]) * 16777619u;
    PyObject **slot = &shared[(h ^ (h >> 16)) & (SHARED_SLOTS - 1)];
    PyObject *found = *slot;
    if (found != NULL && PyUnicode_GET_LENGTH(found) == n && memcmp(PyUnicode_DATA(found), s, (size_t)n) == 0)
        return Py_NewRef(found);
    PyObject *out = text(s, n, 1);
    if (out != NULL) Py_XSETREF(*slot, Py_NewRef(out));
    return out;
}

static void strings_clear(void) {
    for (int i = 0; i < SHARED_SLOTS; i++) Py_CLEAR(shared[i]);
}

/* A string value of at most `longest` characters (and at least one where `named`); `repeated`:
 * a text events repeat (shared_text), not an id. */
static PyObject *bounded_text(Cursor *c, Py_ssize_t longest, int named, int repeated) {
    const unsigned char *s;
    Py_ssize_t n;
    int ascii;
    if (!scan_string(c, &s, &n, &ascii)) return NULL;
    if (ascii && (n > longest || (named && n == 0))) return NULL;
    PyObject *out = repeated ? shared_text(s, n, ascii) : text(s, n, ascii);
    if (out == NULL || ascii) return out;
    Py_ssize_t chars = PyUnicode_GET_LENGTH(out);
    if (chars > longest || (named && chars == 0)) {
        Py_DECREF(out);
        return NULL;
    }
    return out;
}

typedef struct {
    int negative, integral, many; /* many: more than 19 significant digits */
    int digits;                   /* significant digits in `mantissa` */
    uint64_t mantissa;
    long exponent; /* the value is mantissa * 10**exponent (where not `many`) */
    const unsigned char *start, *stop;
} Number;

/* A JSON number's token (its grammar checked); 0 where the text is not one. */
static int scan_number(Cursor *c, Number *x) {
    skip_blanks(c);
    const unsigned char *p = c->p, *end = c->end;
    memset(x, 0, sizeof *x);
    x->start = p;
    x->integral = 1;
    if (p < end && *p == '-') {
        x->negative = 1;
        p++;
    }
    if (p >= end) return FAIL;
#define DIGIT(at) ((at) < end && *(at) >= '0' && *(at) <= '9')
#define TAKE(d, after_point)                                   \
    do {                                                       \
        if (x->digits < 19) {                                  \
            x->mantissa = x->mantissa * 10 + (uint64_t)(d);    \
            if (x->mantissa) x->digits++;                      \
            if (after_point) x->exponent--;                    \
        } else {                                               \
            x->many = 1;                                       \
        }                                                      \
    } while (0)
    if (*p == '0') {
        p++; /* (a digit after a leading zero ends the token where no delimiter follows: refused) */
    } else if (DIGIT(p)) {
        while (DIGIT(p)) {
            TAKE(*p - '0', 0);
            p++;
        }
    } else {
        return FAIL;
    }
    if (p < end && *p == '.') {
        x->integral = 0;
        p++;
        if (!DIGIT(p)) return FAIL;
        while (DIGIT(p)) {
            TAKE(*p - '0', 1);
            p++;
        }
    }
    if (p < end && (*p == 'e' || *p == 'E')) {
        x->integral = 0;
        p++;
        int minus = 0;
        if (p < end && (*p == '+' || *p == '-')) minus = *p++ == '-';
        if (!DIGIT(p)) return FAIL;
        long e = 0;
        while (DIGIT(p)) {
            if (e < 100000) e = e * 10 + (*p - '0');
            p++;
        }
        x->exponent += minus ? -e : e;
    }
#undef TAKE
#undef DIGIT
    c->p = p;
    x->stop = p;
    return 1;
}

/* An integer token's value, 0 where it is not one of at most 18 digits. */
static int number_int(const Number *x, long long *out) {
    if (!x->integral || x->many || x->digits > MAX_INT_DIGITS) return FAIL;
    *out = x->negative ? -(long long)x->mantissa : (long long)x->mantissa;
    return 1;
}

/* A number token as the double a float field holds (an integer token converted from its int);
 * 0 where it is none this file reads: beyond float range, or a long integer. */
static int number_double(const Number *x, double *out) {
    if (x->integral) {
        long long v;
        if (!number_int(x, &v)) return FAIL;
        *out = (double)v; /* (-0 is the int 0, so 0.0) */
        return 1;
    }
    if (!x->many && x->mantissa <= (UINT64_C(1) << 53) && x->exponent >= -22 && x->exponent <= 22) {
        double d = (double)x->mantissa;
        d = x->exponent < 0 ? d / POW10[-x->exponent] : d * POW10[x->exponent];
        *out = x->negative ? -d : d;
        return 1;
    }
    double d;
    if (!x->many && eisel_lemire(x->mantissa, x->exponent, &d)) {
        *out = x->negative ? -d : d;
        return 1;
    }
    char buffer[128];
    Py_ssize_t n = x->stop - x->start;
    if (n >= (Py_ssize_t)sizeof buffer) return FAIL;
    memcpy(buffer, x->start, (size_t)n);
    buffer[n] = '\0';
    d = PyOS_string_to_double(buffer, NULL, NULL);
    if (d == -1.0 && PyErr_Occurred()) {
        if (!PyErr_ExceptionMatches(PyExc_ValueError)) return FAIL;
        PyErr_Clear();
        return FAIL;
    }
    if (!isfinite(d)) return FAIL;
    *out = d;
    return 1;
}

static PyObject *int_value(const Number *x) {
    long long v;
    return number_int(x, &v) ? PyLong_FromLongLong(v) : NULL;
}

static PyObject *float_value(const Number *x) {
    double d;
    return number_double(x, &d) ? PyFloat_FromDouble(d) : NULL;
}

static int literal(Cursor *c, const char *word, size_t n) {
    if ((size_t)(c->end - c->p) < n || memcmp(c->p, word, n) != 0) return FAIL;
    c->p += n;
    return 1;
}

/* Which JSON scalars a field takes. */
enum {
    T_NULL = 1,
    T_BOOL = 2,
    T_INT = 4,     /* an integer token as int */
    T_FLOAT = 8,   /* a fraction/exponent token as float */
    T_AS_FLOAT = 16, /* any number token as float (a float field) */
    T_STR = 32,
    T_SHARED = 64, /* a str as shared_text makes it (a text events repeat) */
};

/* One JSON scalar of the kinds `kinds` allows; NULL where it is another (or no scalar). */
static PyObject *scalar(Cursor *c, int kinds) {
    int next = peek(c);
    if (next == '"') {
        if (!(kinds & T_STR)) return NULL;
        const unsigned char *s;
        Py_ssize_t n;
        int ascii;
        if (!scan_string(c, &s, &n, &ascii)) return NULL;
        return kinds & T_SHARED ? shared_text(s, n, ascii) : text(s, n, ascii);
    }
    if (next == 't' || next == 'f') {
        if (!(kinds & T_BOOL)) return NULL;
        if (literal(c, "true", 4)) Py_RETURN_TRUE;
        if (literal(c, "false", 5)) Py_RETURN_FALSE;
        return NULL;
    }
    if (next == 'n') {
        if (!(kinds & T_NULL) || !literal(c, "null", 4)) return NULL;
        Py_RETURN_NONE;
    }
    Number x;
    if (!scan_number(c, &x)) return NULL;
    if (kinds & T_AS_FLOAT) return float_value(&x);
    if (x.integral) return kinds & T_INT ? int_value(&x) : NULL;
    return kinds & T_FLOAT ? float_value(&x) : NULL;
}

/* A key of a known object: the index of `names` it spells, -1 for another, -2 for no key. */
static int key_index(Cursor *c, const char *const *names, int count) {
    const unsigned char *s;
    Py_ssize_t n;
    int ascii;
    if (!scan_string(c, &s, &n, &ascii) || !eat(c, ':')) return -2;
    for (int i = 0; i < count; i++) {
        if (names[i][0] == (char)(n ? s[0] : 0) && (Py_ssize_t)strlen(names[i]) == n
            && memcmp(names[i], s, (size_t)n) == 0)
            return i;
    }
    return -1;
}

/* The fields of an object of known keys into `slots` (each named at most once, no other key);
 * the bit set of those named, or -1. `read` reads field i's value. */
typedef PyObject *(*FieldReader)(Cursor *c, int field, void *context);

static int fields_of(Cursor *c, const char *const *names, int count, PyObject **slots,
                     FieldReader read, void *context) {
    int named = 0;
    if (!eat(c, '{')) return -1;
    if (eat(c, '}')) return 0;
    do {
        int i = key_index(c, names, count);
        if (i < 0 || (named & (1 << i))) return -1;
        slots[i] = read(c, i, context);
        if (slots[i] == NULL) return -1;
        named |= 1 << i;
    } while (eat(c, ','));
    return eat(c, '}') ? named : -1;
}

static void clear_slots(PyObject **slots, int count) {
    for (int i = 0; i < count; i++) Py_CLEAR(slots[i]);
}

/* ---- the feature objects: one layout kept as the first event's key spans ---- */

typedef struct {
    const unsigned char **key; /* the first object's keys, in order */
    Py_ssize_t *length;
    Py_ssize_t k, room;
    PyObject *names; /* a tuple of them as str, once the first object is read */
} Layout;

/* A feature string's condition as the msgspec pass's key check reads it: no blank or control
 * byte right after either quote, no colon right after the opening one. */
static inline int plain_feature_string(const unsigned char *s, Py_ssize_t n, const Cursor *c) {
    if (n > 0 && (s[0] <= 32 || s[0] == ':')) return 0;
    return c->p >= c->end || *c->p > 32;
}

static int layout_add(Layout *layout, const unsigned char *s, Py_ssize_t n) {
    if (layout->k == layout->room) {
        Py_ssize_t room = layout->room ? 2 * layout->room : 32;
        const unsigned char **key = PyMem_Realloc(layout->key, (size_t)room * sizeof *key);
        if (key == NULL) return -1;
        layout->key = key;
        Py_ssize_t *length = PyMem_Realloc(layout->length, (size_t)room * sizeof *length);
        if (length == NULL) return -1;
        layout->length = length;
        layout->room = room;
    }
    layout->key[layout->k] = s;
    layout->length[layout->k] = n;
    layout->k++;
    return 0;
}

/* The first event's feature object: the layout's names and its row. */
static PyObject *first_row(Cursor *c, Layout *layout) {
    if (!eat(c, '{') || eat(c, '}')) return NULL; /* (an empty first map: the dicts' path) */
    PyObject *values = PyList_New(0);
    if (values == NULL) return NULL;
    do {
        const unsigned char *s;
        Py_ssize_t n;
        int ascii;
        if (!scan_string(c, &s, &n, &ascii) || !plain_feature_string(s, n, c) || !eat(c, ':')) goto fail;
        if (layout_add(layout, s, n) < 0) {
            PyErr_NoMemory();
            goto fail;
        }
        if (peek(c) == '"') {
            const unsigned char *v;
            Py_ssize_t m;
            int plain;
            if (!scan_string(c, &v, &m, &plain) || !plain_feature_string(v, m, c)) goto fail;
            PyObject *value = shared_text(v, m, plain);
            if (value == NULL || PyList_Append(values, value) < 0) {
                Py_XDECREF(value);
                goto fail;
            }
            Py_DECREF(value);
        } else {
            PyObject *value = scalar(c, T_NULL | T_BOOL | T_INT | T_FLOAT);
            if (value == NULL || PyList_Append(values, value) < 0) {
                Py_XDECREF(value);
                goto fail;
            }
            Py_DECREF(value);
        }
    } while (eat(c, ','));
    if (!eat(c, '}')) goto fail;
    /* the names, each once (a repeated one: the dicts' path) */
    layout->names = PyTuple_New(layout->k);
    PyObject *seen = PySet_New(NULL);
    if (layout->names == NULL || seen == NULL) {
        Py_XDECREF(seen);
        goto fail;
    }
    for (Py_ssize_t j = 0; j < layout->k; j++) {
        const unsigned char *s = layout->key[j];
        int ascii = 1;
        for (Py_ssize_t i = 0; i < layout->length[j]; i++) ascii &= s[i] < 0x80;
        PyObject *name = text(s, layout->length[j], ascii);
        if (name == NULL || PySet_Add(seen, name) < 0) {
            Py_XDECREF(name);
            Py_DECREF(seen);
            goto fail;
        }
        PyTuple_SET_ITEM(layout->names, j, name);
    }
    Py_ssize_t distinct = PySet_GET_SIZE(seen);
    Py_DECREF(seen);
    if (distinct != layout->k) goto fail;
    PyObject *row = PyList_AsTuple(values);
    Py_DECREF(values);
    if (row != NULL) PyObject_GC_UnTrack(row); /* (as row_of's) */
    return row;
fail:
    Py_DECREF(values);
    return NULL;
}

/* A later event's feature object: its row where it names the layout's keys in order. */
static PyObject *row_of(Cursor *c, const Layout *layout) {
    if (!eat(c, '{')) return NULL;
    PyObject *row = PyTuple_New(layout->k);
    if (row == NULL) return NULL;
    Py_ssize_t j = 0;
    if (layout->k > 0) {
        do {
            const unsigned char *s;
            Py_ssize_t n;
            int ascii;
            if (j == layout->k || !scan_string(c, &s, &n, &ascii) || n != layout->length[j]
                || memcmp(s, layout->key[j], (size_t)n) != 0 || !plain_feature_string(s, n, c)
                || !eat(c, ':'))
                goto fail;
            PyObject *value;
            if (peek(c) == '"') {
                const unsigned char *v;
                Py_ssize_t m;
                int plain;
                if (!scan_string(c, &v, &m, &plain) || !plain_feature_string(v, m, c)) goto fail;
                value = shared_text(v, m, plain);
            } else {
                value = scalar(c, T_NULL | T_BOOL | T_INT | T_FLOAT);
            }
            if (value == NULL) goto fail;
            PyTuple_SET_ITEM(row, j, value);
            j++;
        } while (eat(c, ','));
    }
    if (j != layout->k || !eat(c, '}')) goto fail;
    PyObject_GC_UnTrack(row); /* (scalars only: no cycle through it, nothing for the collector) */
    return row;
fail:
    Py_DECREF(row);
    return NULL;
}

/* A segment: an object of names (1..256 characters) to texts of <= 256, at most 16 once a repeated
 * name kept its last text (msgspec bounds the dict it built, not the pairs it read). */
static PyObject *segment_of(Cursor *c) {
    if (!eat(c, '{')) return NULL;
    PyObject *segment = PyDict_New();
    if (segment == NULL || eat(c, '}')) return segment;
    do {
        PyObject *name = bounded_text(c, MAX_NAME, 1, 1);
        if (name == NULL) goto fail;
        PyObject *value = eat(c, ':') ? bounded_text(c, MAX_NAME, 0, 1) : NULL;
        int failed = value == NULL || PyDict_SetItem(segment, name, value) < 0; /* (a repeated name: the last) */
        Py_DECREF(name);
        Py_XDECREF(value);
        if (failed) goto fail;
    } while (eat(c, ','));
    if (eat(c, '}') && PyDict_GET_SIZE(segment) <= MAX_SEGMENT) return segment; /* (bound: the dict's) */
fail:
    Py_DECREF(segment);
    return NULL;
}

/* ---- the batch's feature columns, typed ---- */

/* What the values of a feature column are, a bit each (kinds): what columns.py's checks ask. */
enum { K_STR = 1, K_BOOL = 2, K_INT = 4, K_NONE = 8, K_FLOAT = 16 };

typedef struct {
    Py_ssize_t k, n;
    PyObject **columns;  /* k lists of n: each column's values (the rows' objects) */
    long *kinds;         /* per column, the K_ bits of its values */
    PyObject *block;     /* a bytearray of k * n doubles: column j's floats at [j * n, (j + 1) * n) */
} Typed;

static int typed_start(Typed *typed, Py_ssize_t k, Py_ssize_t n) {
    typed->k = k;
    typed->n = n;
    typed->columns = PyMem_Calloc((size_t)(k ? k : 1), sizeof *typed->columns);
    typed->kinds = PyMem_Calloc((size_t)(k ? k : 1), sizeof *typed->kinds);
    typed->block = PyByteArray_FromStringAndSize(NULL, k * n * (Py_ssize_t)sizeof(double));
    if (typed->columns == NULL || typed->kinds == NULL || typed->block == NULL) {
        if (!PyErr_Occurred()) PyErr_NoMemory();
        return -1;
    }
    for (Py_ssize_t j = 0; j < k; j++)
        if ((typed->columns[j] = PyList_New(n)) == NULL) return -1;
    return 0;
}

/* Event e's row into the columns: each value referenced once more, a float's double in the block. */
static void typed_add(Typed *typed, Py_ssize_t e, PyObject *row) {
    double *block = (double *)PyByteArray_AS_STRING(typed->block);
    for (Py_ssize_t j = 0; j < typed->k; j++) {
        PyObject *v = PyTuple_GET_ITEM(row, j);
        long kind;
        double x = 0.0;
        if (PyFloat_CheckExact(v)) {
            kind = K_FLOAT;
            x = PyFloat_AS_DOUBLE(v);
        } else if (PyUnicode_CheckExact(v)) {
            kind = K_STR;
        } else if (PyBool_Check(v)) {
            kind = K_BOOL;
        } else if (v == Py_None) {
            kind = K_NONE;
        } else {
            kind = K_INT;
        }
        typed->kinds[j] |= kind;
        block[j * typed->n + e] = x;
        Py_INCREF(v);
        PyList_SET_ITEM(typed->columns[j], e, v);
    }
}

/* (names, rows, columns, kinds, block): the feature columns handed to struct_decode. */
static PyObject *typed_result(Typed *typed, PyObject *names, PyObject *rows) {
    PyObject *columns = PyList_New(typed->k), *kinds = PyTuple_New(typed->k);
    if (columns == NULL || kinds == NULL) {
        Py_XDECREF(columns);
        Py_XDECREF(kinds);
        return NULL;
    }
    for (Py_ssize_t j = 0; j < typed->k; j++) {
        PyList_SET_ITEM(columns, j, typed->columns[j]);
        typed->columns[j] = NULL;
        PyObject *kind = PyLong_FromLong(typed->kinds[j]);
        if (kind == NULL) {
            Py_DECREF(columns);
            Py_DECREF(kinds);
            return NULL;
        }
        PyTuple_SET_ITEM(kinds, j, kind);
    }
    PyObject *out = PyTuple_Pack(5, names, rows, columns, kinds, typed->block);
    Py_DECREF(columns);
    Py_DECREF(kinds);
    return out;
}

static void typed_free(Typed *typed) {
    if (typed->columns != NULL)
        for (Py_ssize_t j = 0; j < typed->k; j++) Py_XDECREF(typed->columns[j]);
    PyMem_Free(typed->columns);
    PyMem_Free(typed->kinds);
    Py_XDECREF(typed->block);
}

/* ---- predictions ---- */

enum { P_ID, P_MODEL, P_TIME, P_OUTPUT, P_SCHEMA, P_VERSION, P_FEATURES, P_LATENCY, P_SEGMENT, P_FIELDS };
static const char *const PREDICTION_FIELDS[] = {"prediction_id", "model_id", "timestamp", "prediction",
                                                "schema_version", "model_version", "features",
                                                "latency_ms", "segment"};
#define P_REQUIRED ((1 << P_ID) | (1 << P_MODEL) | (1 << P_TIME) | (1 << P_OUTPUT))

enum { O_LABEL, O_SCORE, O_VALUE, O_FIELDS };
static const char *const OUTPUT_FIELDS[] = {"label", "score", "value"};

typedef struct {
    PyObject *outputs[O_FIELDS];
    int output_named;
    Layout *layout;
    int first;
} PredictionContext;

static PyObject *event_time(Cursor *c) {
    Number x;
    long long v;
    if (!scan_number(c, &x) || !number_int(&x, &v) || v < 0 || v > MAX_EPOCH_MS) return NULL;
    return PyLong_FromLongLong(v);
}

static PyObject *schema_version(Cursor *c) {
    Number x;
    long long v;
    if (!scan_number(c, &x) || !number_int(&x, &v) || v != 1) return NULL;
    return PyLong_FromLong(1);
}

static PyObject *read_output(Cursor *c, int field, void *context) {
    (void)context;
    return scalar(c, field == O_LABEL ? T_NULL | T_BOOL | T_INT | T_STR | T_SHARED : T_NULL | T_AS_FLOAT);
}

static PyObject *read_prediction(Cursor *c, int field, void *context) {
    PredictionContext *at = context;
    switch (field) {
    case P_ID:
        return bounded_text(c, MAX_NAME, 1, 0);
    case P_MODEL:
    case P_VERSION:
        return bounded_text(c, MAX_NAME, 1, 1);
    case P_TIME:
        return event_time(c);
    case P_SCHEMA:
        return schema_version(c);
    case P_OUTPUT: {
        at->output_named = fields_of(c, OUTPUT_FIELDS, O_FIELDS, at->outputs, read_output, NULL);
        if (at->output_named < 0) return NULL;
        Py_RETURN_NONE; /* (the output's fields are kept in at->outputs) */
    }
    case P_FEATURES:
        return at->first ? first_row(c, at->layout) : row_of(c, at->layout);
    case P_LATENCY: {
        int next = peek(c);
        if (next == 'n') return scalar(c, T_NULL);
        Number x;
        double d;
        if (!scan_number(c, &x) || !number_double(&x, &d) || !(d >= 0)) return NULL;
        return PyFloat_FromDouble(d);
    }
    case P_SEGMENT:
        return segment_of(c);
    }
    return NULL;
}

/* Whether a batch's values are all bytes of at most max_bytes; the count. */
static int payloads(PyObject *values, Py_ssize_t max_bytes, Py_ssize_t *n) {
    if (!PyList_Check(values)) return 0;
    *n = PyList_GET_SIZE(values);
    for (Py_ssize_t i = 0; i < *n; i++) {
        PyObject *v = PyList_GET_ITEM(values, i);
        if (!PyBytes_Check(v) || PyBytes_GET_SIZE(v) > max_bytes) return 0;
    }
    return 1;
}

/* The call's (values, max_bytes): 1 with the count of a batch to read, 0 for one not taken (empty,
 * a value not bytes or past max_bytes), -1 with an exception for wrong arguments. */
static int batch_of(PyObject *const *args, Py_ssize_t nargs, const char *usage, Py_ssize_t *n) {
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, usage);
        return -1;
    }
    Py_ssize_t max_bytes = PyLong_AsSsize_t(args[1]);
    if (max_bytes == -1 && PyErr_Occurred()) return -1;
    return payloads(args[0], max_bytes, n) && *n > 0;
}

/* A dict of the named fields' lists (those whose bit `named` sets), the lists stolen. */
static PyObject *columns_dict(const char *const *names, PyObject **lists, int count, int named) {
    PyObject *out = PyDict_New();
    if (out == NULL) return NULL;
    for (int i = 0; i < count; i++) {
        if (!(named & (1 << i))) continue;
        if (PyDict_SetItemString(out, names[i], lists[i]) < 0) {
            Py_DECREF(out);
            return NULL;
        }
    }
    return out;
}

static PyObject *not_taken(void) {
    if (PyErr_Occurred()) {
        if (!PyErr_ExceptionMatches(PyExc_MemoryError)) PyErr_Clear();
        else return NULL;
    }
    Py_RETURN_NONE;
}

static PyObject *predictions(PyObject *module, PyObject *const *args, Py_ssize_t nargs) {
    (void)module;
    Py_ssize_t n;
    int taken = batch_of(args, nargs, "predictions(values, max_bytes)", &n);
    if (taken <= 0) return taken < 0 ? NULL : Py_NewRef(Py_None);
    PyObject *lists[P_FIELDS] = {NULL}, *output_lists[O_FIELDS] = {NULL}, *rows = NULL;
    PyObject *result = NULL;
    Layout layout = {NULL, NULL, 0, 0, NULL};
    Typed typed = {0, 0, NULL, NULL, NULL};
    PredictionContext context = {{NULL}, 0, &layout, 1};
    PyObject *slots[P_FIELDS] = {NULL};
    int named_all = -1, outputs_all = -1;
    for (int i = 0; i < P_FIELDS; i++)
        if ((lists[i] = PyList_New(n)) == NULL) goto done;
    for (int i = 0; i < O_FIELDS; i++)
        if ((output_lists[i] = PyList_New(n)) == NULL) goto done;
    for (Py_ssize_t e = 0; e < n; e++) {
        PyObject *value = PyList_GET_ITEM(args[0], e);
        Cursor c = {(const unsigned char *)PyBytes_AS_STRING(value),
                    (const unsigned char *)PyBytes_AS_STRING(value) + PyBytes_GET_SIZE(value)};
        context.first = e == 0;
        int named = fields_of(&c, PREDICTION_FIELDS, P_FIELDS, slots, read_prediction, &context);
        skip_blanks(&c);
        int ok = named >= 0 && c.p == c.end && (named & P_REQUIRED) == P_REQUIRED
                 && (named_all < 0 || named == named_all)
                 && (outputs_all < 0 || context.output_named == outputs_all);
        if (!ok) {
            clear_slots(slots, P_FIELDS);
            clear_slots(context.outputs, O_FIELDS);
            goto done;
        }
        named_all = named;
        outputs_all = context.output_named;
        if (named & (1 << P_FEATURES)) {
            if (e == 0 && typed_start(&typed, layout.k, n) < 0) {
                clear_slots(slots, P_FIELDS);
                clear_slots(context.outputs, O_FIELDS);
                goto done;
            }
            typed_add(&typed, e, slots[P_FEATURES]);
        }
        for (int i = 0; i < P_FIELDS; i++) {
            if (i == P_OUTPUT) {
                Py_CLEAR(slots[i]);
            } else if (slots[i] != NULL) {
                PyList_SET_ITEM(lists[i], e, slots[i]); /* (stolen) */
                slots[i] = NULL;
            }
        }
        for (int i = 0; i < O_FIELDS; i++) {
            if (context.outputs[i] != NULL) {
                PyList_SET_ITEM(output_lists[i], e, context.outputs[i]);
                context.outputs[i] = NULL;
            }
        }
    }
    if (named_all & (1 << P_FEATURES)) {
        rows = typed_result(&typed, layout.names, lists[P_FEATURES]);
        if (rows == NULL) goto done;
        Py_SETREF(lists[P_FEATURES], rows);
        rows = NULL;
    }
    PyObject *columns = columns_dict(PREDICTION_FIELDS, lists, P_FIELDS, named_all & ~(1 << P_OUTPUT));
    PyObject *outputs = columns == NULL ? NULL : columns_dict(OUTPUT_FIELDS, output_lists, O_FIELDS, outputs_all);
    if (outputs != NULL) result = PyTuple_Pack(2, columns, outputs);
    Py_XDECREF(columns);
    Py_XDECREF(outputs);
done:
    for (int i = 0; i < P_FIELDS; i++) Py_XDECREF(lists[i]);
    for (int i = 0; i < O_FIELDS; i++) Py_XDECREF(output_lists[i]);
    Py_XDECREF(layout.names);
    typed_free(&typed);
    PyMem_Free(layout.key);
    PyMem_Free(layout.length);
    strings_clear();
    return result != NULL ? result : not_taken();
}

/* ---- labels ---- */

enum { L_ID, L_LABEL, L_TIME, L_SCHEMA, L_MODEL, L_FIELDS };
static const char *const LABEL_FIELDS[] = {"prediction_id", "label", "timestamp", "schema_version", "model_id"};
#define L_REQUIRED ((1 << L_ID) | (1 << L_LABEL) | (1 << L_TIME))

static PyObject *read_label(Cursor *c, int field, void *context) {
    (void)context;
    switch (field) {
    case L_ID:
        return bounded_text(c, MAX_NAME, 1, 0);
    case L_LABEL:
        return scalar(c, T_BOOL | T_INT | T_FLOAT | T_STR | T_SHARED);
    case L_TIME:
        return event_time(c);
    case L_SCHEMA:
        return schema_version(c);
    case L_MODEL:
        return peek(c) == 'n' ? scalar(c, T_NULL) : bounded_text(c, MAX_NAME, 1, 1);
    }
    return NULL;
}

static PyObject *labels(PyObject *module, PyObject *const *args, Py_ssize_t nargs) {
    (void)module;
    Py_ssize_t n;
    int taken = batch_of(args, nargs, "labels(values, max_bytes)", &n);
    if (taken <= 0) return taken < 0 ? NULL : Py_NewRef(Py_None);
    PyObject *lists[L_FIELDS] = {NULL}, *slots[L_FIELDS] = {NULL}, *result = NULL;
    int named_all = -1;
    for (int i = 0; i < L_FIELDS; i++)
        if ((lists[i] = PyList_New(n)) == NULL) goto done;
    for (Py_ssize_t e = 0; e < n; e++) {
        PyObject *value = PyList_GET_ITEM(args[0], e);
        Cursor c = {(const unsigned char *)PyBytes_AS_STRING(value),
                    (const unsigned char *)PyBytes_AS_STRING(value) + PyBytes_GET_SIZE(value)};
        int named = fields_of(&c, LABEL_FIELDS, L_FIELDS, slots, read_label, NULL);
        skip_blanks(&c);
        if (named < 0 || c.p != c.end || (named & L_REQUIRED) != L_REQUIRED
            || (named_all >= 0 && named != named_all)) {
            clear_slots(slots, L_FIELDS);
            goto done;
        }
        named_all = named;
        for (int i = 0; i < L_FIELDS; i++) {
            if (slots[i] != NULL) {
                PyList_SET_ITEM(lists[i], e, slots[i]);
                slots[i] = NULL;
            }
        }
    }
    result = columns_dict(LABEL_FIELDS, lists, L_FIELDS, named_all);
done:
    for (int i = 0; i < L_FIELDS; i++) Py_XDECREF(lists[i]);
    strings_clear();
    return result != NULL ? result : not_taken();
}

/* ---- rows as a ClickHouse Native block ----
 * native_block(values, keys, kinds, headers): a batch of JSON objects (bytes), each naming exactly
 * `keys` (a list of bytes) in that order, as one block of ClickHouse's Native format: the column
 * and row counts (varints), then per column `headers[i]` (its name and type as Native writes them)
 * and its values, a Nullable column's null map first. Each value is what the sink's writer
 * (store.writer.ClickHouseRowWriter) inserts for the row orjson parses from the same bytes, as
 * `kinds[i]` (one byte a column: N_* below) takes it. None where any object or value is not one
 * these kinds take as it stands (another key order, an escape in a key, a value of another JSON
 * type, a null where the column has none, an integer past 18 digits, a float beyond float range,
 * invalid UTF-8, a lone surrogate, a raw control character in a string, ...): the caller then
 * writes the batch its own way, which also dead-letters what it cannot read. */

/* A column's kind, one byte: its values' base kind, or-ed with N_NULLABLE (a value may be null: a
 * null map first) or N_ARRAY (each value a JSON array of base values: offsets first). */
enum {
    N_STRING = 1, /* a JSON string: String, LowCardinality(String) */
    N_INT64,      /* an integer, in the type's range */
    N_INT32,
    N_UINT64,
    N_UINT32,
    N_UINT16,
    N_UINT8,           /* also true/false, as 1/0 */
    N_FLOAT64,         /* any number, as the double nearest it */
    N_DATETIME64 = 16, /* + precision (0..9): an integer of epoch milliseconds, as ticks */
};
#define N_BASE 0x3f
#define N_NULLABLE 0x40
#define N_ARRAY 0x80
#define N_MAX_COLUMNS 64

typedef struct {
    char *data;
    Py_ssize_t size, room;
} Buffer;

/* Room for `n` more bytes past `size` (0, MemoryError set, where there is none). */
static int buffer_room(Buffer *b, Py_ssize_t n) {
    if (b->size + n > b->room) {
        Py_ssize_t room = b->room ? b->room : 256;
        while (room < b->size + n) room *= 2;
        char *grown = PyMem_Realloc(b->data, (size_t)room);
        if (grown == NULL) {
            PyErr_NoMemory();
            return 0;
        }
        b->data = grown;
        b->room = room;
    }
    return 1;
}

static int buffer_put(Buffer *b, const void *p, Py_ssize_t n) {
    if (!buffer_room(b, n)) return 0;
    memcpy(b->data + b->size, p, (size_t)n);
    b->size += n;
    return 1;
}

static int buffer_varint(Buffer *b, uint64_t v) {
    unsigned char out[10];
    int n = 0;
    do {
        unsigned char byte = v & 0x7f;
        v >>= 7;
        out[n++] = v ? byte | 0x80 : byte;
    } while (v);
    return buffer_put(b, out, n);
}

/* Whether `s` is UTF-8 as RFC 3629 has it (no overlong forms, no surrogates, at most U+10FFFF). */
static int utf8_valid(const unsigned char *s, Py_ssize_t n) {
    Py_ssize_t i = 0;
    while (i < n) {
        unsigned char b = s[i];
        if (b < 0x80) {
            i++;
            continue;
        }
        int more;
        unsigned char low = 0x80, high = 0xbf; /* the second byte's range */
        if (b >= 0xc2 && b <= 0xdf) more = 1;
        else if (b == 0xe0) more = 2, low = 0xa0;
        else if (b == 0xed) more = 2, high = 0x9f;
        else if (b >= 0xe1 && b <= 0xef) more = 2;
        else if (b == 0xf0) more = 3, low = 0x90;
        else if (b == 0xf4) more = 3, high = 0x8f;
        else if (b >= 0xf1 && b <= 0xf3) more = 3;
        else return 0;
        if (i + more >= n) return 0; /* the sequence runs past the end */
        if (s[i + 1] < low || s[i + 1] > high) return 0;
        for (int k = 2; k <= more; k++)
            if ((s[i + k] & 0xc0) != 0x80) return 0;
        i += more + 1;
    }
    return 1;
}

static int hex4(const unsigned char *p, const unsigned char *end, unsigned *out) {
    if (end - p < 4) return 0;
    unsigned v = 0;
    for (int k = 0; k < 4; k++) {
        unsigned char h = p[k];
        unsigned d = h >= '0' && h <= '9' ? h - '0' : h >= 'a' && h <= 'f' ? h - 'a' + 10
                   : h >= 'A' && h <= 'F' ? h - 'A' + 10 : 16;
        if (d == 16) return 0;
        v = v * 16 + d;
    }
    *out = v;
    return 1;
}

/* A code point's UTF-8 bytes at `u`; how many. */
static int code_point(unsigned char *u, unsigned cp) {
    if (cp < 0x80) {
        u[0] = (unsigned char)cp;
        return 1;
    }
    if (cp < 0x800) {
        u[0] = 0xc0 | (cp >> 6), u[1] = 0x80 | (cp & 0x3f);
        return 2;
    }
    if (cp < 0x10000) {
        u[0] = 0xe0 | (cp >> 12), u[1] = 0x80 | ((cp >> 6) & 0x3f), u[2] = 0x80 | (cp & 0x3f);
        return 3;
    }
    u[0] = 0xf0 | (cp >> 18), u[1] = 0x80 | ((cp >> 12) & 0x3f), u[2] = 0x80 | ((cp >> 6) & 0x3f);
    u[3] = 0x80 | (cp & 0x3f);
    return 4;
}

/* A JSON string's text, its escapes resolved, into `out` as Native writes a String (a varint
 * length, the UTF-8 bytes), `scratch` holding an escaped one's text on the way; 0 where the
 * value is no string this takes (see native_block), -1 out of memory. */
static int put_text(Cursor *c, Buffer *out, Buffer *scratch) {
    skip_blanks(c);
    if (c->p >= c->end || *c->p != '"') return 0;
    const unsigned char *start = c->p + 1, *q = start, *end = c->end;
    unsigned char high = 0;
    while (q < end && *q != '"' && *q != '\\') { /* the common case: no escape */
        if (*q < 0x20) return 0;
        high |= *q++;
    }
    if (q >= end) return 0;
    if (*q == '"') {
        Py_ssize_t n = q - start;
        if ((high & 0x80) && !utf8_valid(start, n)) return 0;
        c->p = q + 1;
        return buffer_varint(out, (uint64_t)n) && buffer_put(out, start, n) ? 1 : -1;
    }
    /* escapes: the text written byte by byte into `scratch`, which its escaped length bounds */
    scratch->size = 0;
    if (!buffer_room(scratch, end - start)) return -1;
    unsigned char *w = (unsigned char *)scratch->data;
    memcpy(w, start, (size_t)(q - start));
    w += q - start;
    while (q < end && *q != '"') {
        unsigned char b = *q;
        if (b < 0x20) return 0;
        if (b != '\\') {
            high |= b;
            *w++ = b;
            q++;
            continue;
        }
        if (end - q < 2) return 0;
        unsigned char e = q[1];
        unsigned char one = e == '"' ? '"' : e == '\\' ? '\\' : e == '/' ? '/' : e == 'b' ? '\b' : e == 'f' ? '\f'
                          : e == 'n' ? '\n' : e == 'r' ? '\r' : e == 't' ? '\t' : 0;
        if (one) {
            *w++ = one;
            q += 2;
            continue;
        }
        unsigned cp;
        if (e != 'u' || !hex4(q + 2, end, &cp)) return 0;
        q += 6;
        if (cp >= 0xdc00 && cp <= 0xdfff) return 0; /* a low surrogate alone */
        if (cp >= 0xd800 && cp <= 0xdbff) {         /* a high one: its low one must follow */
            unsigned lo;
            if (end - q < 6 || q[0] != '\\' || q[1] != 'u' || !hex4(q + 2, end, &lo) || lo < 0xdc00 || lo > 0xdfff)
                return 0;
            cp = 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00);
            q += 6;
        }
        w += code_point(w, cp); /* (at most 4 bytes for the 6 or 12 of its escape) */
    }
    if (q >= end) return 0;
    scratch->size = (char *)w - scratch->data;
    if ((high & 0x80) && !utf8_valid((const unsigned char *)scratch->data, scratch->size)) return 0;
    c->p = q + 1;
    return buffer_varint(out, (uint64_t)scratch->size) && buffer_put(out, scratch->data, scratch->size) ? 1 : -1;
}

/* Epoch milliseconds as DateTime64 ticks of `precision`, as the writer's converter computes them
 * (times 10**(precision - 3), or floor-divided by 10**(3 - precision)); 0 past 64 bits. */
static int ticks_of(long long ms, int precision, long long *out) {
    if (precision >= 3) {
        long long scale = 1;
        for (int k = 3; k < precision; k++) scale *= 10;
        return !__builtin_mul_overflow(ms, scale, out);
    }
    long long scale = precision == 2 ? 10 : precision == 1 ? 100 : 1000;
    long long q = ms / scale;
    if (ms % scale != 0 && ms < 0) q--;
    *out = q;
    return 1;
}

static int base_known(int base) {
    return (base >= N_STRING && base <= N_FLOAT64) || (base >= N_DATETIME64 && base <= N_DATETIME64 + 9);
}

/* The bytes a value of `base` takes in a column (a String's: its length's, for a null's stand-in). */
static int base_width(int base) {
    switch (base) {
    case N_STRING: case N_UINT8: return 1;
    case N_UINT16: return 2;
    case N_INT32: case N_UINT32: return 4;
    default: return 8;
    }
}

/* One JSON scalar of `base` into `data`: 1, 0 where it is not one `base` takes, -1 out of memory. */
static int put_scalar(Cursor *c, int base, Buffer *data, Buffer *scratch) {
    if (base == N_STRING) return put_text(c, data, scratch);
    int next = peek(c);
    if (base == N_UINT8 && (next == 't' || next == 'f')) {  /* a bool, written as the writer's 1/0 */
        unsigned char byte = next == 't';
        if (!literal(c, next == 't' ? "true" : "false", next == 't' ? 4 : 5)) return 0;
        return buffer_put(data, &byte, 1) ? 1 : -1;
    }
    if (next == '"' || next < 0) return 0;
    Number x;
    if (!scan_number(c, &x)) return 0;
    if (base == N_FLOAT64) {
        double d;
        if (!number_double(&x, &d)) return PyErr_Occurred() ? -1 : 0;
        return buffer_put(data, &d, 8) ? 1 : -1; /* (little-endian, as Native: x86-64 and arm64) */
    }
    long long v;
    if (!number_int(&x, &v)) return 0;
    int width = base_width(base);
    switch (base) {
    case N_INT32: if (v < INT32_MIN || v > INT32_MAX) return 0; break;
    case N_UINT64: if (v < 0) return 0; break;
    case N_UINT32: if (v < 0 || v > UINT32_MAX) return 0; break;
    case N_UINT16: if (v < 0 || v > UINT16_MAX) return 0; break;
    case N_UINT8: if (v < 0 || v > UINT8_MAX) return 0; break;
    case N_INT64: break;
    default:
        if (!ticks_of(v, base - N_DATETIME64, &v)) return 0;
    }
    return buffer_put(data, &v, width) ? 1 : -1; /* (the low bytes: little-endian) */
}

/* One value of kind `kind` into its column: `data`, and `prefix` (a Nullable one's null map, an
 * Array's offsets, `*count` its elements so far): 1, 0 where it is not one the kind takes, -1 out
 * of memory. */
static int put_value(Cursor *c, int kind, Buffer *data, Buffer *prefix, uint64_t *count, Buffer *scratch) {
    static const unsigned char zero[8] = {0}, one = 1, none = 0;
    int base = kind & N_BASE;
    if (kind & N_ARRAY) {
        if (!eat(c, '[')) return 0;
        if (!eat(c, ']')) {
            do {
                int put = put_scalar(c, base, data, scratch);
                if (put <= 0) return put;
                ++*count;
            } while (eat(c, ','));
            if (!eat(c, ']')) return 0;
        }
        return buffer_put(prefix, count, 8) ? 1 : -1;
    }
    if (kind & N_NULLABLE) {
        if (peek(c) == 'n') {
            if (!literal(c, "null", 4)) return 0;
            return buffer_put(prefix, &one, 1) && buffer_put(data, zero, base_width(base)) ? 1 : -1;
        }
        if (!buffer_put(prefix, &none, 1)) return -1;
    }
    return put_scalar(c, base, data, scratch);
}

/* Whether `kinds` (bytes) names `k` columns of kinds put_value writes; ValueError if not. */
static int kinds_known(PyObject *kinds, Py_ssize_t k, const char *fn) {
    int ok = PyBytes_Check(kinds) && PyBytes_GET_SIZE(kinds) == k;
    for (Py_ssize_t i = 0; ok && i < k; i++) {
        int kind = (unsigned char)PyBytes_AS_STRING(kinds)[i];
        ok = base_known(kind & N_BASE) && (kind & (N_NULLABLE | N_ARRAY)) != (N_NULLABLE | N_ARRAY);
    }
    if (!ok) PyErr_Format(PyExc_ValueError, "%s: a known kind a column", fn);
    return ok;
}

/* The Native block of `k` columns of `n` rows: counts, then each column's header, prefix and data
 * (NULL, MemoryError set, out of memory). */
static PyObject *block_bytes(Py_ssize_t k, Py_ssize_t n, PyObject *headers, Buffer *prefix, Buffer *data) {
    Buffer out = {0};
    int ok = buffer_varint(&out, (uint64_t)k) && buffer_varint(&out, (uint64_t)n);
    for (Py_ssize_t i = 0; ok && i < k; i++) {
        PyObject *header = PyList_GET_ITEM(headers, i);
        ok = buffer_put(&out, PyBytes_AS_STRING(header), PyBytes_GET_SIZE(header))
             && buffer_put(&out, prefix[i].data, prefix[i].size) && buffer_put(&out, data[i].data, data[i].size);
    }
    PyObject *result = ok ? PyBytes_FromStringAndSize(out.data, out.size) : NULL;
    PyMem_Free(out.data);
    return result;
}

static void buffers_free(Buffer *buffers, Py_ssize_t k) {
    for (Py_ssize_t i = 0; i < k; i++) {
        PyMem_Free(buffers[i].data);
        buffers[i] = (Buffer){0};
    }
}

static PyObject *native_block(PyObject *module, PyObject *const *args, Py_ssize_t nargs) {
    (void)module;
    if (nargs != 4 || !PyList_Check(args[0]) || !PyList_Check(args[1]) || !PyList_Check(args[3])) {
        PyErr_SetString(PyExc_TypeError, "native_block(values: list[bytes], keys: list[bytes], kinds: bytes, "
                                         "headers: list[bytes])");
        return NULL;
    }
    PyObject *values = args[0], *keys = args[1], *headers = args[3];
    Py_ssize_t n = PyList_GET_SIZE(values), k = PyList_GET_SIZE(keys);
    if (k < 1 || k > N_MAX_COLUMNS || PyList_GET_SIZE(headers) != k) {
        PyErr_SetString(PyExc_ValueError, "native_block: 1 to 64 keys, a kind and a header each");
        return NULL;
    }
    if (!kinds_known(args[2], k, "native_block")) return NULL;
    const unsigned char *kinds = (const unsigned char *)PyBytes_AS_STRING(args[2]);
    for (Py_ssize_t i = 0; i < k; i++) {
        if (!PyBytes_Check(PyList_GET_ITEM(keys, i)) || !PyBytes_Check(PyList_GET_ITEM(headers, i))) {
            PyErr_SetString(PyExc_ValueError, "native_block: keys and headers are bytes");
            return NULL;
        }
    }
    for (Py_ssize_t e = 0; e < n; e++)
        if (!PyBytes_Check(PyList_GET_ITEM(values, e))) Py_RETURN_NONE;
    Buffer data[N_MAX_COLUMNS] = {{0}}, prefix[N_MAX_COLUMNS] = {{0}}, scratch = {0};
    uint64_t count[N_MAX_COLUMNS] = {0};
    PyObject *result = NULL;
    int taken = 1;
    for (Py_ssize_t e = 0; e < n && taken > 0; e++) {
        PyObject *value = PyList_GET_ITEM(values, e);
        Cursor c = {(const unsigned char *)PyBytes_AS_STRING(value),
                    (const unsigned char *)PyBytes_AS_STRING(value) + PyBytes_GET_SIZE(value)};
        if (!eat(&c, '{')) taken = 0;
        for (Py_ssize_t i = 0; i < k && taken > 0; i++) {
            PyObject *key = PyList_GET_ITEM(keys, i);
            const unsigned char *s;
            Py_ssize_t len;
            int ascii;
            if ((i && !eat(&c, ',')) || !scan_string(&c, &s, &len, &ascii) || len != PyBytes_GET_SIZE(key)
                || memcmp(s, PyBytes_AS_STRING(key), (size_t)len) != 0 || !eat(&c, ':')) {
                taken = 0;
                break;
            }
            taken = put_value(&c, kinds[i], &data[i], &prefix[i], &count[i], &scratch);
        }
        if (taken > 0 && !eat(&c, '}')) taken = 0;
        if (taken > 0) {
            skip_blanks(&c);
            if (c.p != c.end) taken = 0;
        }
    }
    if (taken > 0) result = block_bytes(k, n, headers, prefix, data);
    buffers_free(data, k);
    buffers_free(prefix, k);
    PyMem_Free(scratch.data);
    if (taken < 0 || result != NULL) return result;
    Py_RETURN_NONE;
}

/* Whether the next key (and its colon) is `name`: key_index with one name. */
static int named(Cursor *c, const char *name) {
    return key_index(c, &name, 1) == 0;
}

/* A block of a sink message: its names' tuple, its rows, and its Native block made with the kinds
 * and headers `layout_of(table, names)` gives; 1 taken (`*out` a new (names, n, block) tuple, or
 * NULL for a block of no rows), 0 not, -1 with an exception. */
static int sink_block(Cursor *c, PyObject *table, PyObject *layout_of, PyObject **out) {
    *out = NULL;
    if (!eat(c, '{') || !named(c, "names") || !eat(c, '[')) return 0;
    PyObject *names = PyList_New(0), *layout = NULL;
    Buffer data[N_MAX_COLUMNS] = {{0}}, prefix[N_MAX_COLUMNS] = {{0}}, scratch = {0};
    uint64_t count[N_MAX_COLUMNS] = {0};
    Py_ssize_t k = 0;
    int taken = names != NULL ? 1 : -1;
    if (taken > 0 && !eat(c, ']')) {
        do {
            const unsigned char *s;
            Py_ssize_t len;
            int ascii;
            PyObject *name = scan_string(c, &s, &len, &ascii) ? text(s, len, ascii) : NULL;
            if (name == NULL) {
                taken = PyErr_Occurred() ? -1 : 0;
                break;
            }
            int appended = PyList_Append(names, name);
            Py_DECREF(name);
            if (appended < 0) taken = -1;
        } while (taken > 0 && eat(c, ','));
        if (taken > 0 && !eat(c, ']')) taken = 0;
    }
    k = taken > 0 ? PyList_GET_SIZE(names) : 0;
    Number x;
    long long n = -1;
    if (taken > 0 && (k < 1 || k > N_MAX_COLUMNS || !eat(c, ',') || !named(c, "n") || !scan_number(c, &x)
                      || !number_int(&x, &n) || n < 0 || !eat(c, ',') || !named(c, "columns") || !eat(c, '[')))
        taken = 0;
    if (taken > 0) {  /* the table's layout of these names: (kinds, headers), or None */
        PyObject *as_tuple = PyList_AsTuple(names);
        layout = as_tuple == NULL ? NULL : PyObject_CallFunctionObjArgs(layout_of, table, as_tuple, NULL);
        Py_XDECREF(as_tuple);
        if (layout == NULL) taken = -1;
        else if (layout == Py_None || !PyTuple_Check(layout) || PyTuple_GET_SIZE(layout) != 2
                 || !PyList_Check(PyTuple_GET_ITEM(layout, 1)) || PyList_GET_SIZE(PyTuple_GET_ITEM(layout, 1)) != k)
            taken = 0;
        else if (!kinds_known(PyTuple_GET_ITEM(layout, 0), k, "sink layout"))
            taken = -1;
    }
    const unsigned char *kinds = taken > 0 ? (const unsigned char *)PyBytes_AS_STRING(PyTuple_GET_ITEM(layout, 0)) : NULL;
    for (Py_ssize_t i = 0; i < k && taken > 0; i++) {  /* a column at a time: n values each */
        if ((i && !eat(c, ',')) || !eat(c, '[')) {
            taken = 0;
            break;
        }
        for (long long e = 0; e < n && taken > 0; e++) {
            if (e && !eat(c, ',')) taken = 0;
            else taken = put_value(c, kinds[i], &data[i], &prefix[i], &count[i], &scratch);
        }
        if (taken > 0 && !eat(c, ']')) taken = 0;
    }
    if (taken > 0 && (!eat(c, ']') || !eat(c, '}'))) taken = 0;
    if (taken > 0 && n > 0) {
        PyObject *block = block_bytes(k, n, PyTuple_GET_ITEM(layout, 1), prefix, data);
        *out = block == NULL ? NULL : Py_BuildValue("(NnN)", PyList_AsTuple(names), (Py_ssize_t)n, block);
        if (*out == NULL) taken = -1;
    }
    Py_XDECREF(names);
    Py_XDECREF(layout);
    buffers_free(data, N_MAX_COLUMNS);
    buffers_free(prefix, N_MAX_COLUMNS);
    PyMem_Free(scratch.data);
    return taken;
}

/* native_sink_message(value, layout_of): a sink message of the columns form ({"table": t, "blocks":
 * [{"names": [...], "n": n, "columns": [[n values], ...]}, ...]}, the keys in that order, as
 * records.sink_rows writes it) as (table, [(names, n, Native block), ...]), a block of no rows
 * left out: each block's kinds and headers from `layout_of(table, names)` ((kinds, headers), or
 * None for names the pass does not write). None where the message or a value is not one it takes
 * as it stands (see native_block): the caller then maps it row by row. */
static PyObject *native_sink_message(PyObject *module, PyObject *const *args, Py_ssize_t nargs) {
    (void)module;
    if (nargs != 2 || !PyBytes_Check(args[0]) || !PyCallable_Check(args[1])) {
        PyErr_SetString(PyExc_TypeError, "native_sink_message(value: bytes, layout_of: callable)");
        return NULL;
    }
    Cursor c = {(const unsigned char *)PyBytes_AS_STRING(args[0]),
                (const unsigned char *)PyBytes_AS_STRING(args[0]) + PyBytes_GET_SIZE(args[0])};
    const unsigned char *s;
    Py_ssize_t len;
    int ascii;
    if (!eat(&c, '{') || !named(&c, "table") || !scan_string(&c, &s, &len, &ascii)) Py_RETURN_NONE;
    PyObject *table = text(s, len, ascii), *blocks = table == NULL ? NULL : PyList_New(0), *result = NULL;
    int taken = blocks != NULL ? 1 : (PyErr_Occurred() ? -1 : 0);
    if (taken > 0 && (!eat(&c, ',') || !named(&c, "blocks") || !eat(&c, '['))) taken = 0;
    if (taken > 0 && !eat(&c, ']')) {
        do {
            PyObject *block;
            taken = sink_block(&c, table, args[1], &block);
            if (taken > 0 && block != NULL) {
                if (PyList_Append(blocks, block) < 0) taken = -1;
                Py_DECREF(block);
            }
        } while (taken > 0 && eat(&c, ','));
        if (taken > 0 && !eat(&c, ']')) taken = 0;
    }
    if (taken > 0 && !eat(&c, '}')) taken = 0;
    if (taken > 0) {
        skip_blanks(&c);
        if (c.p != c.end) taken = 0;
    }
    if (taken > 0) result = PyTuple_Pack(2, table, blocks);
    Py_XDECREF(table);
    Py_XDECREF(blocks);
    if (taken < 0 || result != NULL) return result;
    PyErr_Clear();
    Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
    {"predictions", (PyCFunction)(void (*)(void))predictions, METH_FASTCALL,
     "A batch of prediction payloads of the common shape as (columns, output columns), or None."},
    {"labels", (PyCFunction)(void (*)(void))labels, METH_FASTCALL,
     "A batch of label payloads of the common shape as columns, or None."},
    {"native_block", (PyCFunction)(void (*)(void))native_block, METH_FASTCALL,
     "A batch of JSON objects of one key order as a ClickHouse Native block, or None."},
    {"native_sink_message", (PyCFunction)(void (*)(void))native_sink_message, METH_FASTCALL,
     "A sink message of the columns form as (table, [(names, n, Native block), ...]), or None."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module_def = {
    PyModuleDef_HEAD_INIT, "_decode",
    "The common batch's payloads parsed into columns in C; struct_decode falls back to msgspec.",
    -1, methods, NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__decode(void) {
    pow5_init();
    return PyModule_Create(&module_def);
}
