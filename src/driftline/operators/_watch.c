/* The sequential detectors' quiet counting in C: a quiet model's few values, and a busy model's
 * batch (driftline.operators.episodes and .sequential fall back to Python / numpy without it).
 *
 * defer_few(monitor, opener, syms): EpisodeMonitor._defer with SequentialDetector.defer_each in
 * one call, the same steps on the same state: the longest head of `syms` (a few already-mapped
 * symbols) that the opener's per-value bound only defers is counted (the CUSUMs' rises kept, the
 * symbols pending in the opener, its count moved on), then put in the monitor's ring of recent
 * symbols. It returns how many it counted, or -1, where it does not read the state as the Python
 * code would (a value beyond 64 bits, a ring to grow, an unexpected type), having changed nothing
 * but what defer_each's own first steps build on first use (the reach, the groups' slacks, through
 * the same methods), and the caller then runs the Python methods.
 *
 * defer_values(monitor, xs, bound): the same on a monitor's few raw values (a numeric monitor's
 * floats, a categorical one's strings), their symbols found first as _symbol_list finds them: what
 * FeatureWatch._feed_few hands each monitor of a quiet model at a grid line, in one call.
 *
 * cells(edges, xs, out), codes(index, xs, other, out) and quiet_sums(columns, syms, h, sums, out):
 * a numeric and a categorical batch's symbols and the
 * CUSUMs run over them where none alarms, as sequential.count_quiet finds them with numpy (the
 * same integers), without its passes over a (rows x values) matrix: what a model's batch of a few
 * hundred values costs each of its detectors.
 *
 * matmul_columns(x, m, out) and dot_rows(x, y, out): the multivariate watch's row-by-row products
 * (multivariate.rowwise_matmul / rowwise_dot), the same operations in the same order;
 * normal_scores(...): its normal scores (multivariate.NormalScores.scores_by_feature), the same bits.
 *
 * first_codes(values, out): a window column's categories in order of first appearance and each
 * value's code (window_stats.ColumnBlock.of), in one pass.
 *
 * id_hashes(ids, out): the multivariate sample's order, model_watch.id_hashes: each id's BLAKE2b
 * with an 8-byte digest (RFC 7693, written here: hashlib has no call for a list of inputs, and a
 * hasher a prediction from Python cost ~0.3 us), the same bits.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

#define LANES 4 /* sequential.py's _LANES */

/* attribute and method names, interned once */
static PyObject *s_reach, *s_per_value, *s_due, *sn, *s_lanes, *sreach, *s_rises, *s_slacks, *s_lane_slacks, *s_rise, *s_slack, *slearning, *s_ring, *s_pending, *sextend;
static PyObject *s_edges, *s_index, *scategories, *s_open, *s_map, *skind, *s_opener, *s_numeric, *s_categorical;

/* An int attribute as a C long long; 0 and `*ok` cleared where it is none, or beyond 64 bits. */
static long long int_attr(PyObject *obj, PyObject *name, int *ok) {
    PyObject *value = PyObject_GetAttr(obj, name);
    if (value == NULL) {
        *ok = 0;
        return 0;
    }
    int overflow = 0;
    long long out = PyLong_AsLongLongAndOverflow(value, &overflow);
    Py_DECREF(value);
    if (overflow || (out == -1 && PyErr_Occurred())) *ok = 0;
    return out;
}

static int set_int_attr(PyObject *obj, PyObject *name, long long v) {
    PyObject *value = PyLong_FromLongLong(v);
    if (value == NULL) return -1;
    int failed = PyObject_SetAttr(obj, name, value);
    Py_DECREF(value);
    return failed;
}

/* Entry i of an integer buffer (a memoryview of the reach table), or 0 and `*ok` cleared. */
static long long entry(const Py_buffer *view, Py_ssize_t i, int *ok) {
    if (i < 0 || i >= view->len / view->itemsize) {
        *ok = 0;
        return 0;
    }
    const char *at = (const char *)view->buf + i * view->itemsize;
    switch (view->itemsize) {
    case 8: { int64_t v; memcpy(&v, at, 8); return v; }
    case 4: { int32_t v; memcpy(&v, at, 4); return v; }
    case 2: { int16_t v; memcpy(&v, at, 2); return v; }
    default: *ok = 0; return 0;
    }
}

/* Whether a buffer holds signed integers this file reads (the tables) or writes (the ring). */
static int signed_format(const Py_buffer *view) {
    const char *f = view->format == NULL ? "B" : view->format;
    if (*f == '<' || *f == '=' || *f == '@') f++;
    return (strcmp(f, "q") == 0 || strcmp(f, "l") == 0) ? view->itemsize == 8
         : strcmp(f, "i") == 0 ? view->itemsize == 4
         : strcmp(f, "h") == 0 ? view->itemsize == 2 : 0;
}

static int ring_format(const Py_buffer *view) {
    const char *f = view->format == NULL ? "B" : view->format;
    if (*f == '<' || *f == '=' || *f == '@') f++;
    return (strcmp(f, "B") == 0 && view->itemsize == 1) || signed_format(view);
}

/* A list of ints as long longs (all of them, or 0 with `*ok` cleared). */
static int read_ints(PyObject *list, long long *out, Py_ssize_t n) {
    if (!PyList_Check(list) || PyList_GET_SIZE(list) != n) return 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        int overflow = 0;
        out[i] = PyLong_AsLongLongAndOverflow(PyList_GET_ITEM(list, i), &overflow);
        if (overflow || (out[i] == -1 && PyErr_Occurred())) return 0;
    }
    return 1;
}

/* `n` C ints as a list of ints (NULL: out of memory). */
static PyObject *int_list(const long long *values, Py_ssize_t n) {
    PyObject *out = PyList_New(n);
    for (Py_ssize_t i = 0; out != NULL && i < n; i++) {
        PyObject *value = PyLong_FromLongLong(values[i]);
        if (value == NULL) Py_CLEAR(out);
        else PyList_SET_ITEM(out, i, value);
    }
    return out;
}

/* defer_few's steps on `total` (1..64) symbols, `symbol` as C ints and `syms` the same as a list of
 * ints (the head of which goes to the opener's pending list): how many counted, or -1. */
static PyObject *defer_symbols(PyObject *monitor, PyObject *opener, PyObject *syms, const long long *symbol,
                               Py_ssize_t total) {
    int ok = 1;
    PyObject *reach = NULL, *lanes = NULL, *bound = NULL, *rises = NULL, *slacks = NULL, *ring = NULL;
    Py_buffer table = {0}, slots = {0};
    int have_table = 0, have_slots = 0;
    PyObject *result = NULL;
    long long counted = 0;

    /* the opener: the same reads as defer_each (its reach built on first use, as there) */
    reach = PyObject_GetAttr(opener, s_reach);
    if (reach == NULL) goto fail;
    int built = PyObject_IsTrue(reach);
    if (built < 0) goto fail;
    if (!built) {  /* `self._reach or self._per_value()`: built once per reference, as there */
        Py_SETREF(reach, PyObject_CallMethodNoArgs(opener, s_per_value));
        if (reach == NULL) goto fail;
    }
    long long due = int_attr(opener, s_due, &ok), n_opener = int_attr(opener, sn, &ok);
    if (!ok) goto fallback;
    long long room = due - n_opener - 1;
    lanes = PyObject_GetAttr(opener, s_lanes);
    if (lanes == NULL) goto fail;
    long long rise[LANES], slack[LANES];
    int groups = lanes == Py_None ? 1 : LANES;
    if (lanes != Py_None) {
        bound = PyObject_GetAttr(lanes, sreach);
        rises = PyObject_GetAttr(opener, s_rises);
        slacks = PyObject_GetAttr(opener, s_slacks);
        if (bound == NULL || rises == NULL || slacks == NULL) goto fail;
        int found = PyObject_IsTrue(slacks);
        if (found < 0) goto fail;
        if (!found) {  /* `self._slacks or self._lane_slacks()`: found on first use after a settle */
            Py_SETREF(slacks, PyObject_CallMethodNoArgs(opener, s_lane_slacks));
            if (slacks == NULL) goto fail;
        }
        if (!read_ints(rises, rise, LANES) || !read_ints(slacks, slack, LANES)) goto fallback;
    } else {
        bound = Py_NewRef(reach);
        rise[0] = int_attr(opener, s_rise, &ok);
        slack[0] = int_attr(opener, s_slack, &ok);
        if (!ok) goto fallback;
    }
    if (PyObject_GetBuffer(bound, &table, PyBUF_FORMAT | PyBUF_C_CONTIGUOUS) < 0) goto fallback;
    have_table = 1;
    if (!signed_format(&table)) goto fallback;
    long long next[LANES];
    for (; counted < total; counted++) {
        int stop = counted >= room;
        for (int g = 0; g < groups && !stop; g++) {
            long long step = entry(&table, symbol[counted] * groups + g, &ok), value;
            if (!ok || __builtin_add_overflow(rise[g], step, &value)) goto fallback;
            next[g] = value < 0 ? 0 : value;
            if (next[g] >= slack[g]) stop = 1;
        }
        if (stop) break;
        memcpy(rise, next, sizeof rise);
    }
    if (counted == 0) { result = PyLong_FromLong(0); goto done; }

    /* the monitor's ring: the symbols in their slots, if it holds them without growing */
    long long n = int_attr(monitor, sn, &ok), learning = int_attr(monitor, slearning, &ok);
    if (!ok || learning <= 0) goto fallback;
    ring = PyObject_GetAttr(monitor, s_ring);
    if (ring == NULL) goto fail;
    if (PyObject_GetBuffer(ring, &slots, PyBUF_FORMAT | PyBUF_C_CONTIGUOUS | PyBUF_WRITABLE) < 0)
        goto fallback;
    have_slots = 1;
    Py_ssize_t size = slots.len / slots.itemsize;
    if (!ring_format(&slots) || (n + counted > size && size < learning)) goto fallback;  /* to grow: Python */

    /* every read done: the state changes as defer_each and _defer change it */
    if (lanes != Py_None) {
        /* in place, as defer_each (read_ints found a list of LANES): a new list each call is a
         * young object for the collector */
        PyObject *kept[LANES];
        for (int g = 0; g < LANES; g++) {
            kept[g] = PyLong_FromLongLong(rise[g]);
            if (kept[g] == NULL) {
                for (int i = 0; i < g; i++) Py_DECREF(kept[i]);
                goto fail;
            }
        }
        for (int g = 0; g < LANES; g++) {
            PyObject *old = PyList_GET_ITEM(rises, g);
            PyList_SET_ITEM(rises, g, kept[g]);  /* steals kept[g] */
            Py_DECREF(old);
        }
    } else if (set_int_attr(opener, s_rise, rise[0]) < 0) {
        goto fail;
    }
    PyObject *pending = PyObject_GetAttr(opener, s_pending);
    if (pending == NULL) goto fail;
    PyObject *head = PyList_GetSlice(syms, 0, counted);
    PyObject *extended = head == NULL ? NULL : PyObject_CallMethodOneArg(pending, sextend, head);
    Py_XDECREF(head);
    Py_DECREF(pending);
    if (extended == NULL) goto fail;
    Py_DECREF(extended);
    if (set_int_attr(opener, sn, n_opener + counted) < 0) goto fail;
    long long at = n % learning;
    for (long long i = 0; i < counted; i++) {
        char *slot = (char *)slots.buf + at * slots.itemsize;
        long long v = symbol[i];
        switch (slots.itemsize) {
        case 1: { uint8_t s = (uint8_t)v; memcpy(slot, &s, 1); break; }
        case 2: { int16_t s = (int16_t)v; memcpy(slot, &s, 2); break; }
        case 4: { int32_t s = (int32_t)v; memcpy(slot, &s, 4); break; }
        default: { int64_t s = (int64_t)v; memcpy(slot, &s, 8); break; }
        }
        if (++at == learning) at = 0;
    }
    if (set_int_attr(monitor, sn, n + counted) < 0) goto fail;
    result = PyLong_FromLongLong(counted);
    goto done;
fallback:
    PyErr_Clear();
    result = PyLong_FromLong(-1);
    goto done;
fail:
    result = NULL;
done:
    if (have_table) PyBuffer_Release(&table);
    if (have_slots) PyBuffer_Release(&slots);
    Py_XDECREF(reach);
    Py_XDECREF(lanes);
    Py_XDECREF(bound);
    Py_XDECREF(rises);
    Py_XDECREF(slacks);
    Py_XDECREF(ring);
    return result;
}

/* 1 if a call of `fn` has 3 arguments, the one at `list_at` a list; else 0, TypeError set. */
static int three_with_list(const char *fn, Py_ssize_t nargs, PyObject *const *args, int list_at,
                           const char *list_name) {
    if (nargs != 3) {
        PyErr_Format(PyExc_TypeError, "%s takes 3 arguments", fn);
        return 0;
    }
    if (!PyList_CheckExact(args[list_at])) {
        PyErr_Format(PyExc_TypeError, "%s: %s must be a list", fn, list_name);
        return 0;
    }
    return 1;
}

static PyObject *defer_few(PyObject *module, PyObject *const *args, Py_ssize_t nargs) {
    (void)module;
    if (!three_with_list("defer_few", nargs, args, 2, "syms")) return NULL;
    PyObject *monitor = args[0], *opener = args[1], *syms = args[2];
    Py_ssize_t total = PyList_GET_SIZE(syms);
    if (total == 0 || total > 64) return PyLong_FromLong(-1);
    long long symbol[64];
    if (!read_ints(syms, symbol, total)) { PyErr_Clear(); return PyLong_FromLong(-1); }
    return defer_symbols(monitor, opener, syms, symbol, total);
}

/* The cells of `total` floats (not NaN) among the sorted float64 buffer `array` (bisect_left's), or
 * 0 where it is not a non-empty contiguous float64 buffer. */
static int edge_cells(PyObject *array, PyObject *xs, Py_ssize_t total, long long *symbol) {
    Py_buffer edges;
    if (PyObject_GetBuffer(array, &edges, PyBUF_FORMAT | PyBUF_C_CONTIGUOUS) < 0) { PyErr_Clear(); return 0; }
    const char *f = edges.format == NULL ? "B" : edges.format;
    if (*f == '<' || *f == '=' || *f == '@') f++;
    Py_ssize_t size = edges.len / 8;
    int fits = strcmp(f, "d") == 0 && edges.itemsize == 8 && size > 0;
    const double *edge = (const double *)edges.buf;
    for (Py_ssize_t i = 0; fits && i < total; i++) {
        double v = PyFloat_AS_DOUBLE(PyList_GET_ITEM(xs, i));
        Py_ssize_t lo = 0, hi = size;
        while (lo < hi) {  /* bisect_left's loop */
            Py_ssize_t mid = lo + (hi - lo) / 2;
            if (edge[mid] < v) lo = mid + 1;
            else hi = mid;
        }
        symbol[i] = lo;
    }
    PyBuffer_Release(&edges);
    return fits;
}

/* A numeric opener's cells of `total` floats (its `_edges`), or 0 where it does not read them so:
 * a value not a float, NaN or beyond `bound` in magnitude; no edges. */
static int float_cells(PyObject *opener, PyObject *xs, Py_ssize_t total, double bound, long long *symbol) {
    for (Py_ssize_t i = 0; i < total; i++) {
        PyObject *x = PyList_GET_ITEM(xs, i);
        if (!PyFloat_CheckExact(x)) return 0;
        double v = PyFloat_AS_DOUBLE(x);
        if (!(fabs(v) <= bound)) return 0;  /* NaN too: the Python path filters these */
    }
    PyObject *array = PyObject_GetAttr(opener, s_edges);
    if (array == NULL) { PyErr_Clear(); return 0; }
    int fits = edge_cells(array, xs, total, symbol);
    Py_DECREF(array);
    return fits;
}

/* A categorical opener's codes of `total` strings (its index, "other" past its categories), or 0
 * where a value is not a str (the Python path maps those). */
static int category_codes(PyObject *opener, PyObject *xs, Py_ssize_t total, long long *symbol) {
    for (Py_ssize_t i = 0; i < total; i++)
        if (!PyUnicode_CheckExact(PyList_GET_ITEM(xs, i))) return 0;
    PyObject *index = PyObject_GetAttr(opener, s_index);
    PyObject *categories = index == NULL ? NULL : PyObject_GetAttr(opener, scategories);
    int fits = index != NULL && categories != NULL && PyDict_CheckExact(index) && PyList_CheckExact(categories);
    long long other = fits ? (long long)PyList_GET_SIZE(categories) : 0;
    for (Py_ssize_t i = 0; fits && i < total; i++) {
        PyObject *code = PyDict_GetItemWithError(index, PyList_GET_ITEM(xs, i));
        if (code == NULL) {
            if (PyErr_Occurred()) fits = 0;
            symbol[i] = other;
            continue;
        }
        int overflow = 0;
        symbol[i] = PyLong_Check(code) ? PyLong_AsLongLongAndOverflow(code, &overflow) : -1;
        if (!PyLong_Check(code) || overflow || (symbol[i] == -1 && PyErr_Occurred())) fits = 0;
    }
    Py_XDECREF(index);
    Py_XDECREF(categories);
    if (!fits) PyErr_Clear();
    return fits;
}

/* defer_values(monitor, xs, bound): update_each's head on a few raw values, while the monitor
 * watches its reference: a numeric monitor's floats (all finite, within `bound`) or a categorical
 * one's strings mapped to the opener's symbols as _symbol_list maps them, then defer_few's steps.
 * How many it counted (the caller feeds the rest to update_each), or -1, nothing changed. */
static PyObject *defer_values(PyObject *module, PyObject *const *args, Py_ssize_t nargs) {
    (void)module;
    if (!three_with_list("defer_values", nargs, args, 1, "xs")) return NULL;
    PyObject *monitor = args[0], *xs = args[1];
    double bound = PyFloat_AsDouble(args[2]);
    if (bound == -1.0 && PyErr_Occurred()) return NULL;
    Py_ssize_t total = PyList_GET_SIZE(xs);
    if (total == 0 || total > 64) return PyLong_FromLong(-1);
    PyObject *open = PyObject_GetAttr(monitor, s_open);
    PyObject *map = open == NULL ? NULL : PyObject_GetAttr(monitor, s_map);
    int watching = open == Py_None && map == Py_None;
    Py_XDECREF(open);
    Py_XDECREF(map);
    if (!watching) { PyErr_Clear(); return PyLong_FromLong(-1); }  /* an episode or its regime: Python */
    PyObject *kind = PyObject_GetAttr(monitor, skind);
    if (kind == NULL) { PyErr_Clear(); return PyLong_FromLong(-1); }
    int numeric = PyUnicode_Check(kind) && PyUnicode_Compare(kind, s_numeric) == 0;
    int categorical = PyUnicode_Check(kind) && PyUnicode_Compare(kind, s_categorical) == 0;
    Py_DECREF(kind);
    PyObject *opener = PyObject_GetAttr(monitor, s_opener);
    if (opener == NULL) { PyErr_Clear(); return PyLong_FromLong(-1); }
    long long symbol[64];
    int found = numeric ? float_cells(opener, xs, total, bound, symbol)
              : categorical ? category_codes(opener, xs, total, symbol) : 0;
    PyObject *syms = found ? int_list(symbol, total) : NULL;
    if (!found || syms == NULL) {
        Py_DECREF(opener);
        if (found) return NULL;  /* out of memory */
        return PyLong_FromLong(-1);
    }
    PyObject *result = defer_symbols(monitor, opener, syms, symbol, total);
    Py_DECREF(syms);
    Py_DECREF(opener);
    return result;
}

/* 1 if a call of `fn` has `want` arguments; else 0, TypeError set. */
static int takes(const char *fn, Py_ssize_t nargs, Py_ssize_t want) {
    if (nargs == want) return 1;
    PyErr_Format(PyExc_TypeError, "%s takes %zd arguments", fn, want);
    return 0;
}

/* A buffer's format letter, its byte-order prefix skipped. */
static const char *format_of(const Py_buffer *view) {
    const char *f = view->format == NULL ? "B" : view->format;
    return (*f == '<' || *f == '=' || *f == '@') ? f + 1 : f;
}

static int float64_format(const Py_buffer *view) {
    return strcmp(format_of(view), "d") == 0 && view->itemsize == 8;
}

static int int64_format(const Py_buffer *view) {
    const char *f = format_of(view);
    return (strcmp(f, "q") == 0 || strcmp(f, "l") == 0) && view->itemsize == 8;
}

static int int32_format(const Py_buffer *view) {
    const char *f = format_of(view);
    return (strcmp(f, "i") == 0 || strcmp(f, "l") == 0) && view->itemsize == 4;
}

/* Each of the `total` values' count of the `size` sorted edges below it, into `cell` (see `cells`);
 * 0, nothing written, where a value or the last edge is NaN. */
static int search_cells(const double *edge, Py_ssize_t size, const double *x, Py_ssize_t total, int64_t *cell) {
    if (isnan(edge[size - 1])) return 0;
    for (Py_ssize_t i = 0; i < total; i++)
        if (isnan(x[i])) return 0;
    for (Py_ssize_t i = 0; i < total; i++) {
        const double v = x[i];
        const double *base = edge;
        Py_ssize_t n = size;
        while (n > 1) {  /* the answer stays within [base, base + n] */
            Py_ssize_t half = n / 2;
            base = base[half] < v ? base + half : base;
            n -= half;
        }
        cell[i] = (base - edge) + (*base < v);
    }
    return 1;
}

/* cells(edges, xs, out): each value's count of edges below it (searchsorted's side="left" on the
 * sorted float64 `edges`) into the int64 `out`, as a batch's symbols. A branchless bisection: on
 * values in random order numpy's branchy one spends most of its ~60 ns a value (1,024 edges) on
 * mispredicted jumps. False, nothing written, where a buffer does not fit (the caller searches
 * with numpy): not contiguous float64 / int64, sizes differ, no edges, or a value or the last
 * edge NaN (numpy orders NaN last, which `<` alone does not). */
static PyObject *cells(PyObject *module, PyObject *const *args, Py_ssize_t nargs) {
    (void)module;
    if (!takes("cells", nargs, 3)) return NULL;
    Py_buffer edges = {0}, xs = {0}, out = {0};
    int fits = 0;
    if (PyObject_GetBuffer(args[0], &edges, PyBUF_FORMAT | PyBUF_C_CONTIGUOUS) < 0) goto done;
    if (PyObject_GetBuffer(args[1], &xs, PyBUF_FORMAT | PyBUF_C_CONTIGUOUS) < 0) goto done;
    if (PyObject_GetBuffer(args[2], &out, PyBUF_FORMAT | PyBUF_C_CONTIGUOUS | PyBUF_WRITABLE) < 0) goto done;
    Py_ssize_t size = edges.len / 8, total = xs.len / 8;
    if (!float64_format(&edges) || !float64_format(&xs) || !int64_format(&out) || size == 0
        || out.len != xs.len)
        goto done;
    fits = search_cells((const double *)edges.buf, size, (const double *)xs.buf, total, (int64_t *)out.buf);
done:
    if (edges.obj != NULL) PyBuffer_Release(&edges);
    if (xs.obj != NULL) PyBuffer_Release(&xs);
    if (out.obj != NULL) PyBuffer_Release(&out);
    if (PyErr_Occurred()) PyErr_Clear();  /* not a buffer: the caller's numpy path */
    return PyBool_FromLong(fits);
}

/* cells_rows(edges, matrix, rows, out): `cells` of several detectors at once, each over a row of
 * one (r, n) float64 matrix (a held block of a model's features): the sorted float64 edges[k]
 * searched for each value of row rows[k], into row k of the int64 (len(edges), n) `out`. One call
 * for a bank's numeric detectors instead of a Python path each. False (`out` then holds nothing to
 * use) where any of it does not fit as `cells` would refuse it: the caller's path per detector. */
static PyObject *cells_rows(PyObject *module, PyObject *const *args, Py_ssize_t nargs) {
    (void)module;
    if (!takes("cells_rows", nargs, 4)) return NULL;
    PyObject *edges_list = args[0], *rows = args[2];
    Py_buffer matrix = {0}, out = {0}, edges = {0};
    int fits = 0;
    if (!PyList_Check(edges_list) || !PyList_Check(rows) || PyList_GET_SIZE(rows) != PyList_GET_SIZE(edges_list))
        goto done;
    if (PyObject_GetBuffer(args[1], &matrix, PyBUF_FORMAT | PyBUF_C_CONTIGUOUS) < 0) goto done;
    if (PyObject_GetBuffer(args[3], &out, PyBUF_FORMAT | PyBUF_C_CONTIGUOUS | PyBUF_WRITABLE) < 0) goto done;
    Py_ssize_t k = PyList_GET_SIZE(edges_list);
    if (!float64_format(&matrix) || !int64_format(&out) || matrix.ndim != 2 || out.ndim != 2
        || out.shape[0] != k || out.shape[1] != matrix.shape[1])
        goto done;
    Py_ssize_t r = matrix.shape[0], n = matrix.shape[1];
    for (Py_ssize_t i = 0; i < k; i++) {
        Py_ssize_t row = PyLong_AsSsize_t(PyList_GET_ITEM(rows, i));
        if (row < 0 || row >= r) goto done;  /* (an error set by a non-int is cleared below) */
        if (PyObject_GetBuffer(PyList_GET_ITEM(edges_list, i), &edges, PyBUF_FORMAT | PyBUF_C_CONTIGUOUS) < 0)
            goto done;
        int found = float64_format(&edges) && edges.len >= 8
                    && search_cells((const double *)edges.buf, edges.len / 8, (const double *)matrix.buf + row * n,
                                    n, (int64_t *)out.buf + i * n);
        PyBuffer_Release(&edges);
        if (!found) goto done;
    }
    fits = 1;
done:
    if (matrix.obj != NULL) PyBuffer_Release(&matrix);
    if (out.obj != NULL) PyBuffer_Release(&out);
    if (PyErr_Occurred()) PyErr_Clear();  /* not a buffer or not an int: the caller's path */
    return PyBool_FromLong(fits);
}

/* codes(index, xs, other, out): a categorical detector's batch symbols, its `index` (a dict of
 * category -> code) read for each string of the list `xs` (`other` where it names none), into the
 * int64 `out`: what its _symbols_at finds for a list of strings. False where a value is not a str
 * (nothing written) or a code not an int (`out` then holds nothing to use): the caller's Python path. */
static PyObject *codes(PyObject *module, PyObject *const *args, Py_ssize_t nargs) {
    (void)module;
    if (!takes("codes", nargs, 4)) return NULL;
    PyObject *index = args[0], *xs = args[1];
    long long other = PyLong_AsLongLong(args[2]);
    if (other == -1 && PyErr_Occurred()) return NULL;
    if (!PyDict_CheckExact(index) || !PyList_CheckExact(xs)) Py_RETURN_FALSE;
    Py_buffer out;
    if (PyObject_GetBuffer(args[3], &out, PyBUF_FORMAT | PyBUF_C_CONTIGUOUS | PyBUF_WRITABLE) < 0) {
        PyErr_Clear();
        Py_RETURN_FALSE;
    }
    Py_ssize_t total = PyList_GET_SIZE(xs);
    int fits = int64_format(&out) && out.len == total * 8;
    for (Py_ssize_t i = 0; fits && i < total; i++)
        fits = PyUnicode_CheckExact(PyList_GET_ITEM(xs, i));
    int64_t *code = (int64_t *)out.buf;
    for (Py_ssize_t i = 0; fits && i < total; i++) {
        PyObject *found = PyDict_GetItemWithError(index, PyList_GET_ITEM(xs, i));  /* borrowed */
        if (found == NULL) {
            if (PyErr_Occurred()) fits = 0;
            else code[i] = other;
            continue;
        }
        int overflow = 0;
        long long value = PyLong_CheckExact(found) ? PyLong_AsLongLongAndOverflow(found, &overflow) : -1;
        if (!PyLong_CheckExact(found) || overflow || (value == -1 && PyErr_Occurred())) fits = 0;
        code[i] = value;
    }
    PyBuffer_Release(&out);
    PyErr_Clear();
    return PyBool_FromLong(fits);
}

/* quiet_sums(columns, syms, h, sums, out): a detector's CUSUMs (a row of the 2-D int32 / int64
 * table `columns` each, a column per symbol) run over `syms` from `sums`, as count_quiet's step
 * runs them: `S = max(S + step, 0)` value by value. Where no row reaches its threshold `h` on the
 * way, the final S in `out` and the slack min(h - S) returned (at least 1); 0 where one does (the
 * caller runs them value by value), -1 where a buffer does not fit or a sum would overflow (the
 * caller's numpy path). */
static PyObject *quiet_sums(PyObject *module, PyObject *const *args, Py_ssize_t nargs) {
    (void)module;
    if (!takes("quiet_sums", nargs, 5)) return NULL;
    Py_buffer table = {0}, symbols = {0}, h = {0}, sums = {0}, out = {0};
    long long verdict = -1;
    int64_t *s = NULL;
    if (PyObject_GetBuffer(args[0], &table, PyBUF_FORMAT | PyBUF_ND | PyBUF_C_CONTIGUOUS) < 0) goto done;
    if (PyObject_GetBuffer(args[1], &symbols, PyBUF_FORMAT | PyBUF_C_CONTIGUOUS) < 0) goto done;
    if (PyObject_GetBuffer(args[2], &h, PyBUF_FORMAT | PyBUF_C_CONTIGUOUS) < 0) goto done;
    if (PyObject_GetBuffer(args[3], &sums, PyBUF_FORMAT | PyBUF_C_CONTIGUOUS) < 0) goto done;
    if (PyObject_GetBuffer(args[4], &out, PyBUF_FORMAT | PyBUF_C_CONTIGUOUS | PyBUF_WRITABLE) < 0) goto done;
    int wide = int64_format(&table), narrow = int32_format(&table);
    if (table.ndim != 2 || !(wide || narrow) || !int64_format(&symbols) || !int64_format(&h)
        || !int64_format(&sums) || !int64_format(&out))
        goto done;
    Py_ssize_t rows = table.shape[0], width = table.shape[1];
    if (h.len != rows * 8 || sums.len != rows * 8 || out.len != rows * 8 || rows == 0) goto done;
    s = PyMem_Malloc((size_t)rows * sizeof *s);
    if (s == NULL) goto done;
    memcpy(s, sums.buf, (size_t)rows * sizeof *s);
    const int64_t *sym = (const int64_t *)symbols.buf, *limit = (const int64_t *)h.buf;
    Py_ssize_t total = symbols.len / 8;
    verdict = 1;
    for (Py_ssize_t i = 0; i < total && verdict == 1; i++) {
        int64_t k = sym[i];
        if (k < 0 || k >= width) { verdict = -1; break; }  /* numpy's take raises: its path */
        for (Py_ssize_t r = 0; r < rows; r++) {
            int64_t step = wide ? ((const int64_t *)table.buf)[r * width + k]
                                : (int64_t)((const int32_t *)table.buf)[r * width + k];
            int64_t next;
            if (__builtin_add_overflow(s[r], step, &next)) { verdict = -1; break; }
            s[r] = next < 0 ? 0 : next;
            if (s[r] >= limit[r]) { verdict = 0; break; }
        }
    }
    if (verdict == 1) {  /* quiet: the final S, and the slack min(h - S) the caller arms with (>= 1) */
        memcpy(out.buf, s, (size_t)rows * sizeof *s);
        for (Py_ssize_t r = 0; r < rows; r++)
            if (r == 0 || limit[r] - s[r] < verdict) verdict = limit[r] - s[r];
    }
done:
    PyMem_Free(s);
    if (table.obj != NULL) PyBuffer_Release(&table);
    if (symbols.obj != NULL) PyBuffer_Release(&symbols);
    if (h.obj != NULL) PyBuffer_Release(&h);
    if (sums.obj != NULL) PyBuffer_Release(&sums);
    if (out.obj != NULL) PyBuffer_Release(&out);
    if (PyErr_Occurred()) PyErr_Clear();
    return PyLong_FromLongLong(verdict);
}

/* A 2-D float64 buffer with any strides (a transposed view too), or 0 with nothing held. */
static int float_matrix(PyObject *obj, Py_buffer *view) {
    if (PyObject_GetBuffer(obj, view, PyBUF_FORMAT | PyBUF_STRIDES) < 0) return 0;
    if (view->ndim == 2 && float64_format(view)) return 1;
    PyBuffer_Release(view);
    return 0;
}

#define AT(view, r, c) (*(const double *)((const char *)(view).buf + (r) * (view).strides[0] + (c) * (view).strides[1]))

/* matmul_columns(x, m, out): multivariate.rowwise_matmul's products into the C-contiguous (k, n)
 * `out` (its transpose is x @ m), for the (n, d) `x` and (d, k) `m`: the same operations in the same
 * order as its numpy steps (out from 0.0, then for each column j of x in turn out[c] += m[j, c] *
 * x[:, j]), so the same bits, with no (k, n) temporary per column. False where a buffer does not
 * fit (the caller's numpy steps). */
static PyObject *matmul_columns(PyObject *module, PyObject *const *args, Py_ssize_t nargs) {
    (void)module;
    if (!takes("matmul_columns", nargs, 3)) return NULL;
    Py_buffer x, m, out = {0};
    int have_x = float_matrix(args[0], &x), have_m = have_x && float_matrix(args[1], &m), fits = 0;
    if (have_m && PyObject_GetBuffer(args[2], &out, PyBUF_FORMAT | PyBUF_C_CONTIGUOUS | PyBUF_WRITABLE) == 0) {
        Py_ssize_t n = x.shape[0], d = x.shape[1], k = m.shape[1];
        fits = m.shape[0] == d && float64_format(&out) && out.len == n * k * 8;
        double *o = (double *)out.buf;
        /* each output's sum kept in a register over the columns, for a block of rows at a time:
         * per output element the same products added in the same order as the numpy steps */
        enum { BLOCK = 8 };
        for (Py_ssize_t i0 = 0; fits && i0 < n; i0 += BLOCK) {
            Py_ssize_t rows = n - i0 < BLOCK ? n - i0 : BLOCK;
            for (Py_ssize_t c = 0; c < k; c++) {
                double acc[BLOCK] = {0.0};
                for (Py_ssize_t j = 0; j < d; j++) {
                    const double w = AT(m, j, c);
                    const char *column = (const char *)x.buf + j * x.strides[1] + i0 * x.strides[0];
                    if (rows == BLOCK && x.strides[0] == 8) {  /* feature-major: contiguous rows */
                        const double *v = (const double *)column;
                        for (int r = 0; r < BLOCK; r++) acc[r] += w * v[r];
                    } else {
                        for (Py_ssize_t r = 0; r < rows; r++)
                            acc[r] += w * *(const double *)(column + r * x.strides[0]);
                    }
                }
                memcpy(o + c * n + i0, acc, (size_t)rows * sizeof(double));
            }
        }
        PyBuffer_Release(&out);
    }
    if (have_m) PyBuffer_Release(&m);
    if (have_x) PyBuffer_Release(&x);
    PyErr_Clear();
    return PyBool_FromLong(fits);
}

/* dot_rows(x, y, out): multivariate.rowwise_dot into the float64 `out` (n): each row's products
 * summed column by column from 0.0, as its numpy steps. False where a buffer does not fit. */
static PyObject *dot_rows(PyObject *module, PyObject *const *args, Py_ssize_t nargs) {
    (void)module;
    if (!takes("dot_rows", nargs, 3)) return NULL;
    Py_buffer x, y, out = {0};
    int have_x = float_matrix(args[0], &x), have_y = have_x && float_matrix(args[1], &y), fits = 0;
    if (have_y && PyObject_GetBuffer(args[2], &out, PyBUF_FORMAT | PyBUF_C_CONTIGUOUS | PyBUF_WRITABLE) == 0) {
        Py_ssize_t n = x.shape[0], d = x.shape[1];
        fits = y.shape[0] == n && y.shape[1] == d && float64_format(&out) && out.len == n * 8;
        double *o = (double *)out.buf;
        for (Py_ssize_t i = 0; fits && i < n; i++) o[i] = 0.0;
        for (Py_ssize_t j = 0; fits && j < d; j++) {
            const char *a = (const char *)x.buf + j * x.strides[1], *b = (const char *)y.buf + j * y.strides[1];
            if (x.strides[0] == 8 && y.strides[0] == 8) {  /* feature-major, as the watch's */
                const double *u = (const double *)a, *v = (const double *)b;
                for (Py_ssize_t i = 0; i < n; i++) o[i] += u[i] * v[i];
            } else {
                for (Py_ssize_t i = 0; i < n; i++)
                    o[i] += *(const double *)(a + i * x.strides[0]) * *(const double *)(b + i * y.strides[0]);
            }
        }
        PyBuffer_Release(&out);
    }
    if (have_y) PyBuffer_Release(&y);
    if (have_x) PyBuffer_Release(&x);
    PyErr_Clear();
    return PyBool_FromLong(fits);
}

/* Contiguous buffers of a (d, 1) or flat array: `count` items of the format `want` ('d' float64,
 * 'q' int64, 'i' int32); 0 (released) where it is not. */
static int flat_of(PyObject *obj, Py_buffer *view, char want, Py_ssize_t count) {
    if (PyObject_GetBuffer(obj, view, PyBUF_FORMAT | PyBUF_C_CONTIGUOUS) < 0) return 0;
    int fits = want == 'd' ? float64_format(view) : (want == 'i' ? int32_format(view) : int64_format(view));
    if (fits && view->len >= count * view->itemsize) return 1;
    PyBuffer_Release(view);
    return 0;
}

/* One value's count of its row's points below it (`at_most`: at most it) by the grid-started
 * bisection of multivariate._FlatScores: from the first point of the value's cell, `steps`
 * halving probes. -1 where a probe would leave the padded row (a table that does not fit). */
static Py_ssize_t grid_count(const double *padded, Py_ssize_t padded_size, const int32_t *first, double v,
                             double low, double scale, Py_ssize_t cells, Py_ssize_t cell_offset, int steps,
                             int at_most) {
    double position = (v - low) * scale;  /* as _cells: NaN (inf - inf, inf * 0) in cell 0 */
    position = position > 0.0 ? position : 0.0;  /* fmax's and fmin's results, without their calls */
    position = position < (double)(cells - 1) ? position : (double)(cells - 1);
    int64_t base = first[cell_offset + (Py_ssize_t)position];
    for (int64_t step = ((int64_t)1 << steps) / 2; step; step /= 2) {
        if (base + step - 1 < 0 || base + step - 1 >= padded_size) return -1;
        const double point = padded[base + step - 1];
        base += (at_most ? point <= v : point < v) ? step : 0;
    }
    return (Py_ssize_t)base;
}

/* normal_scores(x, padded, first, scores, score_offsets, row_offsets, tails, grid_scale, sizes,
 * cells, steps, width, out): multivariate.NormalScores.scores_by_feature of the (n, d) float64 `x` (any
 * strides) into the C-contiguous float64 (d, n) `out`, from its _FlatScores' arrays (`first` int32):
 * per value the grid-started count of points below it, a second count (at most it, at most the
 * row's `sizes[j]` points: a +inf point equals the +inf padding after it) where a point equals it,
 * the mid-rank's score from the table (a feature's odd ranks, then its even ones), and the tails'
 * line for a value outside [low, high] (0.0 for NaN). The numpy steps' operations value by value,
 * so the same bits. False where a buffer does not fit (the caller's numpy steps). */
static PyObject *normal_scores(PyObject *module, PyObject *const *args, Py_ssize_t nargs) {
    (void)module;
    if (!takes("normal_scores", nargs, 13)) return NULL;
    Py_buffer x, padded = {0}, first = {0}, scores = {0}, score_offsets = {0}, row_offsets = {0}, tails = {0},
              grid = {0}, sizes = {0}, out = {0};
    Py_ssize_t cells = PyLong_AsSsize_t(args[9]), width = PyLong_AsSsize_t(args[11]);
    long steps = PyLong_AsLong(args[10]);
    int have_x = !PyErr_Occurred() && float_matrix(args[0], &x), fits = 0;
    if (!have_x || cells < 1 || width < 1 || steps < 0 || steps > 62) goto done;
    Py_ssize_t n = x.shape[0], d = x.shape[1];
    if (!flat_of(args[1], &padded, 'd', 1) || !flat_of(args[2], &first, 'i', d * cells)
        || !flat_of(args[3], &scores, 'd', 1) || !flat_of(args[4], &score_offsets, 'q', d)
        || !flat_of(args[5], &row_offsets, 'q', d) || !flat_of(args[6], &tails, 'd', 6 * d)
        || !flat_of(args[7], &grid, 'd', d) || !flat_of(args[8], &sizes, 'q', d))
        goto done;
    if (PyObject_GetBuffer(args[12], &out, PyBUF_FORMAT | PyBUF_C_CONTIGUOUS | PyBUF_WRITABLE) < 0) goto done;
    if (!float64_format(&out) || out.len != n * d * 8) goto done;
    const double *point = (const double *)padded.buf, *table = (const double *)scores.buf;
    const double *tail = (const double *)tails.buf, *scale = (const double *)grid.buf;
    const int32_t *starts = (const int32_t *)first.buf;
    const int64_t *score_at = (const int64_t *)score_offsets.buf;
    const int64_t *row_at = (const int64_t *)row_offsets.buf, *size_of = (const int64_t *)sizes.buf;
    const Py_ssize_t points = padded.len / 8, table_size = scores.len / 8;
    double *u = (double *)out.buf;
    for (Py_ssize_t j = 0; j < d; j++) {
        const double low = tail[j], high = tail[d + j], u_low = tail[2 * d + j], u_high = tail[3 * d + j];
        const double slope_low = tail[4 * d + j], slope_high = tail[5 * d + j];
        const int64_t row = row_at[j];
        for (Py_ssize_t i = 0; i < n; i++) {
            const double v = AT(x, i, j);
            Py_ssize_t base = grid_count(point, points, starts, v, low, scale[j], cells, j * cells, (int)steps, 0);
            if (base < 0) goto done;
            const int64_t left = base - row;
            int64_t rank = 2 * left + 1;  /* left + right + 1 where no point equals the value */
            const int64_t probe = (left < width - 1 ? left : width - 1) + row;
            if (probe < 0 || probe >= points) goto done;
            if (point[probe] == v) {
                Py_ssize_t right = grid_count(point, points, starts, v, low, scale[j], cells, j * cells,
                                              (int)steps, 1);
                if (right < 0) goto done;
                rank = left + (right - row < size_of[j] ? right - row : size_of[j]) + 1;
            }
            /* odd ranks (no tie) first: the common case reads half of the feature's table */
            const int64_t at = score_at[j] + (rank >> 1) + ((rank & 1) ? 0 : size_of[j] + 1);
            if (at < 0 || at >= table_size) goto done;
            double score = table[at];
            if (!(v >= low && v <= high))  /* beyond the tails' ends, or NaN */
                score = v > high ? u_high + (v - high) * slope_high
                                 : (v < low ? u_low - (low - v) * slope_low : 0.0);
            u[j * n + i] = score;
        }
    }
    fits = 1;
done:
    if (out.obj != NULL) PyBuffer_Release(&out);
    Py_buffer *views[] = {&padded, &first, &scores, &score_offsets, &row_offsets, &tails, &grid, &sizes};
    for (size_t k = 0; k < sizeof views / sizeof *views; k++)
        if (views[k]->obj != NULL) PyBuffer_Release(views[k]);
    if (have_x) PyBuffer_Release(&x);
    PyErr_Clear();
    return PyBool_FromLong(fits);
}

/* first_codes(values, out): window_stats.ColumnBlock.of's categorical column in one pass: the
 * distinct values of the list `values` other than None, in order of first appearance, and each
 * value's position among them into the int32 `out` (None: their count); returns (the distinct
 * values as a list, how many values are None). None (nothing to use) where `values` is not a list
 * of str, bool and None only with at least one str or bool, or `out` does not fit: the caller's
 * Python path. */
static PyObject *first_codes(PyObject *module, PyObject *const *args, Py_ssize_t nargs) {
    (void)module;
    if (!takes("first_codes", nargs, 2)) return NULL;
    PyObject *values = args[0];
    if (!PyList_CheckExact(values)) Py_RETURN_NONE;
    Py_buffer out;
    if (PyObject_GetBuffer(args[1], &out, PyBUF_FORMAT | PyBUF_C_CONTIGUOUS | PyBUF_WRITABLE) < 0) {
        PyErr_Clear();
        Py_RETURN_NONE;
    }
    Py_ssize_t total = PyList_GET_SIZE(values);
    PyObject *index = NULL, *distinct = NULL;
    int fits = int32_format(&out) && out.len == total * 4;
    Py_ssize_t nones = 0;
    for (Py_ssize_t i = 0; fits && i < total; i++) {
        PyObject *v = PyList_GET_ITEM(values, i);
        nones += v == Py_None;
        fits = PyUnicode_CheckExact(v) || PyBool_Check(v) || v == Py_None;
    }
    fits = fits && nones < total;  /* (all None: no category, the numeric path's) */
    if (fits) {
        index = PyDict_New();
        distinct = PyList_New(0);
        fits = index != NULL && distinct != NULL;
    }
    int32_t *code = (int32_t *)out.buf;
    for (Py_ssize_t i = 0; fits && i < total; i++) {
        PyObject *v = PyList_GET_ITEM(values, i);
        if (v == Py_None) {
            code[i] = -1;  /* the count, once it is known */
            continue;
        }
        PyObject *found = PyDict_GetItemWithError(index, v);  /* borrowed */
        if (found != NULL) {
            code[i] = (int32_t)PyLong_AsLong(found);
            continue;
        }
        Py_ssize_t next = PyList_GET_SIZE(distinct);
        PyObject *number = PyErr_Occurred() || next >= INT32_MAX ? NULL : PyLong_FromSsize_t(next);
        fits = number != NULL && PyDict_SetItem(index, v, number) == 0 && PyList_Append(distinct, v) == 0;
        Py_XDECREF(number);
        code[i] = (int32_t)next;
    }
    if (fits) {
        int32_t count = (int32_t)PyList_GET_SIZE(distinct);
        for (Py_ssize_t i = 0; i < total; i++)
            if (code[i] < 0) code[i] = count;
    }
    PyBuffer_Release(&out);
    Py_XDECREF(index);
    if (!fits) {
        Py_XDECREF(distinct);
        if (PyErr_Occurred() && !PyErr_ExceptionMatches(PyExc_MemoryError)) PyErr_Clear();
        if (PyErr_Occurred()) return NULL;
        Py_RETURN_NONE;
    }
    PyObject *result = Py_BuildValue("(Nn)", distinct, nones);  /* (steals distinct) */
    return result;
}

/* ---- id_hashes: BLAKE2b with an 8-byte digest (RFC 7693), no key ---- */

static const uint64_t BLAKE2B_IV[8] = {
    0x6a09e667f3bcc908ULL, 0xbb67ae8584caa73bULL, 0x3c6ef372fe94f82bULL, 0xa54ff53a5f1d36f1ULL,
    0x510e527fade682d1ULL, 0x9b05688c2b3e6c1fULL, 0x1f83d9abfb41bd6bULL, 0x5be0cd19137e2179ULL,
};

static const unsigned char BLAKE2B_SIGMA[10][16] = {
    {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15},
    {14, 10, 4, 8, 9, 15, 13, 6, 1, 12, 0, 2, 11, 7, 5, 3},
    {11, 8, 12, 0, 5, 2, 15, 13, 10, 14, 3, 6, 7, 1, 9, 4},
    {7, 9, 3, 1, 13, 12, 11, 14, 2, 6, 5, 10, 4, 0, 15, 8},
    {9, 0, 5, 7, 2, 4, 10, 15, 14, 1, 11, 12, 6, 8, 3, 13},
    {2, 12, 6, 10, 0, 11, 8, 3, 4, 13, 7, 5, 15, 14, 1, 9},
    {12, 5, 1, 15, 14, 13, 4, 10, 0, 7, 6, 3, 9, 2, 8, 11},
    {13, 11, 7, 14, 12, 1, 3, 9, 5, 0, 15, 4, 8, 6, 2, 10},
    {6, 15, 14, 9, 11, 3, 0, 8, 12, 2, 13, 7, 1, 4, 10, 5},
    {10, 2, 8, 4, 7, 6, 1, 5, 15, 11, 9, 14, 3, 12, 13, 0},
};

static inline uint64_t rotr64(uint64_t x, int n) { return (x >> n) | (x << (64 - n)); }

#define BLAKE2B_G(a, b, c, d, x, y)      \
    do {                                 \
        v[a] = v[a] + v[b] + (x);        \
        v[d] = rotr64(v[d] ^ v[a], 32);  \
        v[c] = v[c] + v[d];              \
        v[b] = rotr64(v[b] ^ v[c], 24);  \
        v[a] = v[a] + v[b] + (y);        \
        v[d] = rotr64(v[d] ^ v[a], 16);  \
        v[c] = v[c] + v[d];              \
        v[b] = rotr64(v[b] ^ v[c], 63);  \
    } while (0)

/* One 128-byte block into the state `h` (`counted`: the message's bytes up to this block's end). */
static void blake2b_compress(uint64_t h[8], const unsigned char block[128], uint64_t counted, int last) {
    uint64_t m[16], v[16];
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    memcpy(m, block, sizeof m);
#else
    for (int i = 0; i < 16; i++) {
        uint64_t w = 0;
        for (int b = 7; b >= 0; b--) w = w << 8 | block[8 * i + b]; /* little-endian */
        m[i] = w;
    }
#endif
    for (int i = 0; i < 8; i++) {
        v[i] = h[i];
        v[i + 8] = BLAKE2B_IV[i];
    }
    v[12] ^= counted; /* (the counter's high word: 0 below 2**64 bytes) */
    if (last) v[14] = ~v[14];
    /* the rounds unrolled: each round's message words at constant indices (kept in registers) */
#define BLAKE2B_ROUND(r)                                                                         \
    do {                                                                                         \
        const unsigned char *s = BLAKE2B_SIGMA[(r) % 10];                                        \
        BLAKE2B_G(0, 4, 8, 12, m[s[0]], m[s[1]]);                                                \
        BLAKE2B_G(1, 5, 9, 13, m[s[2]], m[s[3]]);                                                \
        BLAKE2B_G(2, 6, 10, 14, m[s[4]], m[s[5]]);                                               \
        BLAKE2B_G(3, 7, 11, 15, m[s[6]], m[s[7]]);                                               \
        BLAKE2B_G(0, 5, 10, 15, m[s[8]], m[s[9]]);                                               \
        BLAKE2B_G(1, 6, 11, 12, m[s[10]], m[s[11]]);                                             \
        BLAKE2B_G(2, 7, 8, 13, m[s[12]], m[s[13]]);                                              \
        BLAKE2B_G(3, 4, 9, 14, m[s[14]], m[s[15]]);                                              \
    } while (0)
    BLAKE2B_ROUND(0); BLAKE2B_ROUND(1); BLAKE2B_ROUND(2); BLAKE2B_ROUND(3); BLAKE2B_ROUND(4);
    BLAKE2B_ROUND(5); BLAKE2B_ROUND(6); BLAKE2B_ROUND(7); BLAKE2B_ROUND(8); BLAKE2B_ROUND(9);
    BLAKE2B_ROUND(10); BLAKE2B_ROUND(11);
#undef BLAKE2B_ROUND
    for (int i = 0; i < 8; i++) h[i] ^= v[i] ^ v[i + 8];
}

/* The 8-byte BLAKE2b digest of `n` bytes, as the big-endian word Python reads from it. */
static uint64_t blake2b_64(const unsigned char *data, size_t n) {
    uint64_t h[8];
    memcpy(h, BLAKE2B_IV, sizeof h);
    h[0] ^= 0x01010000ULL ^ 8; /* depth 1, fanout 1, no key, an 8-byte digest */
    size_t done = 0;
    while (n - done > 128) {
        blake2b_compress(h, data + done, (uint64_t)(done + 128), 0);
        done += 128;
    }
    unsigned char last[128] = {0};
    memcpy(last, data + done, n - done);
    blake2b_compress(h, last, (uint64_t)n, 1);
    uint64_t word = 0; /* the digest is h[0]'s bytes, little-endian: read big-endian */
    for (int b = 0; b < 8; b++) word = word << 8 | ((h[0] >> (8 * b)) & 0xFF);
    return word;
}

/* id_hashes(ids, out): model_watch.id_hashes of a list of str ids into `out` (a writable buffer
 * of len(ids) int64): each id's UTF-8 hashed by BLAKE2b-64, read big-endian, shifted right by one. */
static PyObject *id_hashes(PyObject *module, PyObject *const *args, Py_ssize_t nargs) {
    (void)module;
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "id_hashes(ids, out)");
        return NULL;
    }
    PyObject *ids = args[0];
    if (!PyList_CheckExact(ids)) {
        PyErr_SetString(PyExc_TypeError, "id_hashes: ids must be a list");
        return NULL;
    }
    Py_buffer out;
    if (PyObject_GetBuffer(args[1], &out, PyBUF_WRITABLE | PyBUF_C_CONTIGUOUS) < 0) return NULL;
    Py_ssize_t n = PyList_GET_SIZE(ids);
    if (out.len != n * (Py_ssize_t)sizeof(int64_t)) {
        PyBuffer_Release(&out);
        PyErr_SetString(PyExc_ValueError, "id_hashes: out must hold an int64 per id");
        return NULL;
    }
    int64_t *hashes = (int64_t *)out.buf;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *id = PyList_GET_ITEM(ids, i);
        Py_ssize_t size;
        const char *text = PyUnicode_Check(id) ? PyUnicode_AsUTF8AndSize(id, &size) : NULL;
        if (text == NULL) { /* (not a str, or one without UTF-8: str.encode's error, from Python) */
            PyBuffer_Release(&out);
            if (!PyErr_Occurred()) PyErr_SetString(PyExc_TypeError, "id_hashes: an id is not a str");
            return NULL;
        }
        hashes[i] = (int64_t)(blake2b_64((const unsigned char *)text, (size_t)size) >> 1);
    }
    PyBuffer_Release(&out);
    Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
    {"defer_few", (PyCFunction)(void (*)(void))defer_few, METH_FASTCALL,
     "Count the head of a few symbols a monitor's opener only defers (see the module's C source)."},
    {"defer_values", (PyCFunction)(void (*)(void))defer_values, METH_FASTCALL,
     "update_each's head on a few raw values while a monitor watches its reference (see the C source)."},
    {"cells", (PyCFunction)(void (*)(void))cells, METH_FASTCALL,
     "A batch's symbols: each value's count of the sorted edges below it (see the C source)."},
    {"cells_rows", (PyCFunction)(void (*)(void))cells_rows, METH_FASTCALL,
     "`cells` of several detectors, each over a row of one float64 matrix (see the C source)."},
    {"codes", (PyCFunction)(void (*)(void))codes, METH_FASTCALL,
     "A categorical detector's batch symbols: its index read for each string (see the C source)."},
    {"quiet_sums", (PyCFunction)(void (*)(void))quiet_sums, METH_FASTCALL,
     "A detector's CUSUMs over a batch's symbols where none reaches its threshold (see the C source)."},
    {"matmul_columns", (PyCFunction)(void (*)(void))matmul_columns, METH_FASTCALL,
     "rowwise_matmul's products, the same bits, into a (k, n) array (see the C source)."},
    {"normal_scores", (PyCFunction)(void (*)(void))normal_scores, METH_FASTCALL,
     "NormalScores.scores_by_feature's grid-started counts and table scores in one loop (see the C source)."},
    {"dot_rows", (PyCFunction)(void (*)(void))dot_rows, METH_FASTCALL,
     "rowwise_dot's sums, the same bits (see the C source)."},
    {"id_hashes", (PyCFunction)(void (*)(void))id_hashes, METH_FASTCALL,
     "model_watch.id_hashes of a list of ids, into an int64 buffer (see the C source)."},
    {"first_codes", (PyCFunction)(void (*)(void))first_codes, METH_FASTCALL,
     "A list's distinct values in order and each one's code, as ColumnBlock.of (see the C source)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module_def = {
    PyModuleDef_HEAD_INIT, "_watch",
    "A quiet model's few values in C; driftline.operators.episodes falls back to Python without it.",
    -1, methods, NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__watch(void) {
    s_reach = PyUnicode_InternFromString("_reach");
    if (s_reach == NULL) return NULL;
    s_per_value = PyUnicode_InternFromString("_per_value");
    if (s_per_value == NULL) return NULL;
    s_due = PyUnicode_InternFromString("_due");
    if (s_due == NULL) return NULL;
    sn = PyUnicode_InternFromString("n");
    if (sn == NULL) return NULL;
    s_lanes = PyUnicode_InternFromString("_lanes");
    if (s_lanes == NULL) return NULL;
    sreach = PyUnicode_InternFromString("reach");
    if (sreach == NULL) return NULL;
    s_rises = PyUnicode_InternFromString("_rises");
    if (s_rises == NULL) return NULL;
    s_slacks = PyUnicode_InternFromString("_slacks");
    if (s_slacks == NULL) return NULL;
    s_lane_slacks = PyUnicode_InternFromString("_lane_slacks");
    if (s_lane_slacks == NULL) return NULL;
    s_rise = PyUnicode_InternFromString("_rise");
    if (s_rise == NULL) return NULL;
    s_slack = PyUnicode_InternFromString("_slack");
    if (s_slack == NULL) return NULL;
    slearning = PyUnicode_InternFromString("learning");
    if (slearning == NULL) return NULL;
    s_ring = PyUnicode_InternFromString("_ring");
    if (s_ring == NULL) return NULL;
    s_pending = PyUnicode_InternFromString("_pending");
    if (s_pending == NULL) return NULL;
    sextend = PyUnicode_InternFromString("extend");
    if (sextend == NULL) return NULL;
    s_edges = PyUnicode_InternFromString("_edges");
    s_index = PyUnicode_InternFromString("_index");
    scategories = PyUnicode_InternFromString("categories");
    s_open = PyUnicode_InternFromString("_open");
    s_map = PyUnicode_InternFromString("_map");
    skind = PyUnicode_InternFromString("kind");
    s_opener = PyUnicode_InternFromString("_opener");
    s_numeric = PyUnicode_InternFromString("numeric");
    s_categorical = PyUnicode_InternFromString("categorical");
    if (s_edges == NULL || s_index == NULL || scategories == NULL || s_open == NULL || s_map == NULL
        || skind == NULL || s_opener == NULL || s_numeric == NULL || s_categorical == NULL)
        return NULL;
    return PyModule_Create(&module_def);
}
