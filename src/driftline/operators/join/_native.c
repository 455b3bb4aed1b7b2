/* The join's hot paths in C (driftline.operators.join.core falls back to Python without them).
 *
 * close_pending: the commonest label, one whose prediction's first record is pending and whose
 * interval holds it, closes that record (LabelJoin.on_labels). It walks a batch of labels from
 * `start` and handles each label of that case as the Python loop does, byte for byte: the group's
 * record is replaced by its joined form, the label's (id, group, offsets, time, value, rerouted)
 * tuple is appended to `joined`, and, while the join tracks changes, the closing is appended to
 * `closings`. It stops at the first label of any other case (no such record, a closed or spilled
 * one, an interval that does not hold the label, a value it cannot read as the Python code
 * would), which the caller then handles in Python before calling again. The record layout is
 * records.py's; every read is bounds-checked, and a group that does not parse as records stops
 * the walk rather than being trusted.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

/* records.py: _HEAD (<II: length, CRC-32), id key, _TS (<qB: time, state), digest (8 bytes),
 * then a pending record's _PRED (<BIHI: flags, ctx id, shape id, label length) */
#define HEAD_SIZE 8
#define TS_SIZE 9
#define DIGEST_SIZE 8
#define BODY (TS_SIZE + DIGEST_SIZE)
#define PENDING 0
#define JOINED 1
#define SPILLED 8
#define CTX_SIZE 4

static uint32_t read_u32(const unsigned char *p) {
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static int64_t read_i64(const unsigned char *p) {
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--) v = v << 8 | p[i];
    return (int64_t)v;
}

static void write_u32(unsigned char *p, uint32_t v) {
    for (int i = 0; i < 4; i++) p[i] = (unsigned char)(v >> (8 * i));
}

/* Where `key` first occurs in data[from:size], or -1 (bytes.find). */
static Py_ssize_t find(const char *data, Py_ssize_t size, const char *key, Py_ssize_t klen, Py_ssize_t from) {
    if (klen == 0 || size - from < klen) return -1;
    const char *end = data + size - klen;
    for (const char *p = data + from; p <= end; p++) {
        p = memchr(p, key[0], (size_t)(end - p + 1));
        if (p == NULL) return -1;
        if (memcmp(p, key, (size_t)klen) == 0) return p - data;
    }
    return -1;
}

static int as_list(PyObject *obj, const char *name) {
    if (!PyList_CheckExact(obj)) {
        PyErr_Format(PyExc_TypeError, "close_pending: %s must be a list", name);
        return 0;
    }
    return 1;
}

/* close_pending(groups, keys, crcs, timestamps, digests, pids, labels, start, stop, room, low_mask,
 *               split, horizon, added, store_present, rerouted, joined, closings)
 *   -> (index of the first label not handled, records closed) */
static PyObject *close_pending(PyObject *module, PyObject *const *args, Py_ssize_t nargs) {
    (void)module;
    if (nargs != 18) {
        PyErr_SetString(PyExc_TypeError, "close_pending takes 18 arguments");
        return NULL;
    }
    PyObject *groups = args[0], *keys = args[1], *crcs = args[2], *stamps = args[3], *digests = args[4];
    PyObject *pids = args[5], *labels = args[6];
    PyObject *added = args[13], *rerouted = args[15], *joined = args[16], *closings = args[17];
    if (!as_list(groups, "groups") || !as_list(keys, "keys") || !as_list(crcs, "crcs")
        || !as_list(stamps, "timestamps") || !as_list(digests, "digests") || !as_list(pids, "pids")
        || !as_list(labels, "labels") || !as_list(joined, "joined") || !as_list(closings, "closings"))
        return NULL;
    Py_ssize_t start = PyLong_AsSsize_t(args[7]), stop = PyLong_AsSsize_t(args[8]);
    Py_ssize_t room = PyLong_AsSsize_t(args[9]);
    unsigned long low = PyLong_AsUnsignedLong(args[10]);
    unsigned long split = PyLong_AsUnsignedLong(args[11]);
    long long horizon = PyLong_AsLongLong(args[12]);
    int store_present = PyObject_IsTrue(args[14]);
    if (PyErr_Occurred()) return NULL;
    if (added != Py_None && !PySet_Check(added)) {
        PyErr_SetString(PyExc_TypeError, "close_pending: added must be a set or None");
        return NULL;
    }
    Py_ssize_t n = PyList_GET_SIZE(keys);
    if (PyList_GET_SIZE(crcs) != n || PyList_GET_SIZE(stamps) != n || PyList_GET_SIZE(digests) != n
        || PyList_GET_SIZE(pids) != n || PyList_GET_SIZE(labels) != n) {
        PyErr_SetString(PyExc_ValueError, "close_pending: a value per label in every list");
        return NULL;
    }
    if (start < 0) start = 0;
    if (stop > n) stop = n;
    unsigned long high = 2 * low + 1;
    Py_ssize_t ngroups = PyList_GET_SIZE(groups);
    Py_ssize_t closed = 0;
    Py_ssize_t i = start;
    for (; i < stop && closed < room; i++) {
        PyObject *key_obj = PyList_GET_ITEM(keys, i), *digest_obj = PyList_GET_ITEM(digests, i);
        if (!PyBytes_CheckExact(key_obj) || !PyBytes_CheckExact(digest_obj)
            || PyBytes_GET_SIZE(digest_obj) != DIGEST_SIZE)
            break;
        unsigned long crc = PyLong_AsUnsignedLong(PyList_GET_ITEM(crcs, i));
        long long ts = PyLong_AsLongLong(PyList_GET_ITEM(stamps, i));
        if (PyErr_Occurred()) {  /* not a 64-bit value: Python's ints take it */
            PyErr_Clear();
            break;
        }
        unsigned long gid = crc & low;
        if (gid < split) gid = crc & high;
        if ((Py_ssize_t)gid >= ngroups) break;
        PyObject *group = PyList_GET_ITEM(groups, gid);
        if (!PyBytes_CheckExact(group)) break;
        const char *data = PyBytes_AS_STRING(group), *key = PyBytes_AS_STRING(key_obj);
        const unsigned char *udata = (const unsigned char *)data;
        Py_ssize_t size = PyBytes_GET_SIZE(group), klen = PyBytes_GET_SIZE(key_obj);
        Py_ssize_t found = find(data, size, key, klen, HEAD_SIZE);
        if (found < 0) break;
        found -= HEAD_SIZE;
        /* the key's first bytes are its first record's if a record starts there */
        Py_ssize_t pos = 0;
        int walked = 1;
        while (pos < found) {
            if (pos + 4 > size) { walked = 0; break; }
            uint32_t length = read_u32(udata + pos);
            if (length == 0) { walked = 0; break; }
            pos += length;
        }
        if (!walked || pos != found) break;
        Py_ssize_t at = HEAD_SIZE + klen;
        Py_ssize_t body = pos + at + BODY;
        /* the record's time, state, digest and pending part up to its ctx id must be in the group */
        if (body + 1 + CTX_SIZE > size) break;
        Py_ssize_t end = pos + read_u32(udata + pos);
        if (end > size || end < body + 1 + CTX_SIZE) break;
        int64_t pred_ts = read_i64(udata + pos + at);
        unsigned char state = udata[pos + at + 8];
        if (state != PENDING || ts < pred_ts) break;
        long long delay;
        if (__builtin_sub_overflow((long long)ts, (long long)pred_ts, &delay) || delay > horizon) break;
        if ((udata[body] & SPILLED) && store_present) break;
        /* the joined record: head, id key, time, state, payload digest, ctx id, label's digest */
        Py_ssize_t joined_size = at + BODY + CTX_SIZE + DIGEST_SIZE;
        PyObject *fresh = PyBytes_FromStringAndSize(NULL, size - (end - pos) + joined_size);
        if (fresh == NULL) return NULL;
        unsigned char *out = (unsigned char *)PyBytes_AS_STRING(fresh);
        memcpy(out, data, (size_t)pos);
        unsigned char *rec = out + pos;
        write_u32(rec, (uint32_t)joined_size);
        write_u32(rec + 4, (uint32_t)crc);
        memcpy(rec + HEAD_SIZE, key, (size_t)klen);
        memcpy(rec + at, udata + pos + at, 8);  /* the prediction's time */
        rec[at + 8] = JOINED;
        memcpy(rec + at + TS_SIZE, udata + body - DIGEST_SIZE, DIGEST_SIZE);
        memcpy(rec + at + BODY, udata + body + 1, CTX_SIZE);
        memcpy(rec + at + BODY + CTX_SIZE, PyBytes_AS_STRING(digest_obj), DIGEST_SIZE);
        memcpy(rec + joined_size, data + end, (size_t)(size - end));
        if (added != Py_None) {  /* a closing of a record the last checkpoint holds pending */
            PyObject *keyed = PyBytes_FromStringAndSize(data + pos + HEAD_SIZE, klen + 8);
            if (keyed == NULL) { Py_DECREF(fresh); return NULL; }
            int seen = PySet_Contains(added, keyed);
            Py_DECREF(keyed);
            if (seen < 0) { Py_DECREF(fresh); return NULL; }
            if (!seen) {
                PyObject *closing = PyBytes_FromStringAndSize(NULL, klen + TS_SIZE + DIGEST_SIZE);
                if (closing == NULL) { Py_DECREF(fresh); return NULL; }
                char *c = PyBytes_AS_STRING(closing);
                memcpy(c, key, (size_t)klen);
                memcpy(c + klen, data + pos + at, 8);
                c[klen + 8] = JOINED;
                memcpy(c + klen + TS_SIZE, PyBytes_AS_STRING(digest_obj), DIGEST_SIZE);
                int failed = PyList_Append(closings, closing);
                Py_DECREF(closing);
                if (failed) { Py_DECREF(fresh); return NULL; }
            }
        }
        PyObject *item = Py_BuildValue("(OOnnOOO)", PyList_GET_ITEM(pids, i), group, pos + at, end,
                                       PyList_GET_ITEM(stamps, i), PyList_GET_ITEM(labels, i), rerouted);
        if (item == NULL) { Py_DECREF(fresh); return NULL; }
        int failed = PyList_Append(joined, item);  /* holds the old group for the outcome's reads */
        Py_DECREF(item);
        if (failed) { Py_DECREF(fresh); return NULL; }
        PyList_SetItem(groups, (Py_ssize_t)gid, fresh);  /* steals fresh, releases the old group */
        closed++;
    }
    return Py_BuildValue("(nn)", i, closed);
}

static PyMethodDef methods[] = {
    {"close_pending", (PyCFunction)(void (*)(void))close_pending, METH_FASTCALL,
     "Close the pending records of a batch's commonest labels (see the module's C source)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module_def = {
    PyModuleDef_HEAD_INIT, "_native",
    "The join's commonest label case in C; driftline.operators.join.core falls back to Python without it.",
    -1, methods, NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__native(void) { return PyModule_Create(&module_def); }
