/* The join's hot paths in C (driftline.operators.join.core falls back to Python without them).
 *
 * close_pending: the commonest label, one whose prediction's first record is pending and whose
 * interval holds it, closes that record (LabelJoin.on_labels). It walks a batch of labels from
 * `start` and handles each label of that case as the Python loop does, byte for byte: the group's
 * record is replaced by its joined form, the label's (id, group, offsets, time, value, rerouted)
 * tuple is appended to `joined`, and, while the join tracks changes, the closing is appended to
 * `closings` (a spilled record's payload is read back from the pending store for the outcome). It
 * stops at the first label of any other case (no such record, a closed one, an interval that does
 * not hold the label, a value it cannot read as the Python code would), which the caller then handles in Python before calling again. The record layout is
 * records.py's; every read is bounds-checked, and a group that does not parse as records stops
 * the walk rather than being trusted.
 *
 * add_pending: the commonest prediction, a new id (no record of it in its group, no label held for
 * it) of a batch whose features share one known layout, is added as a pending record
 * (LabelJoin.on_predictions): the record packed as the Python loop packs it, appended to its group,
 * its id hash to its second of the time index, the table split as it grows. It stops, before
 * changing anything, at the first prediction that needs more (a record of its id, a held label, a
 * context, second or bucket not seen yet, the memory budget to look at, a time already past
 * the labels' watermark, an eviction), which the Python loop then handles alone.
 *
 * outcome_rows: the outcomes of the labels close_pending (or Python) joined, read from their
 * pending records as outcomes.py's _outcomes reads them, each a JoinedOutcome made by calling the
 * class with the same values; their features' JSON is left to Python (made for the batch at once).
 *
 * rows_json: that JSON, each row's features as an object, from the texts Python made for the
 * batch at once (orjson's of every float, each record's other values as a JSON list): the value
 * texts put between the layout's key texts as features.py's _Shape.jsons puts them, with no
 * object per value; None where a row's other values do not split at their commas (a string holding
 * one), which Python then handles.
 *
 * packed_rows: features.py's _packed_features' encoding of each event of a batch of one layout, its
 * float features' row of the batch's float64 block then orjson's JSON list of its other values,
 * made in one pass; None where one of those values is not one it writes as orjson does (a string
 * needing an escape, an int beyond 64 bits, another type), which Python then encodes.
 *
 * pending_tails: outputs.py's _pending_tails of a batch of scored class predictions (every score a
 * float, every label a str, int or bool, no value): each (flags, text length, score's double then
 * the class text), each distinct label's text made once by the caller's function; None for any
 * other batch, which Python then reads.
 *
 * payload_digests: records.py's payload_digest of each payload of a list (CRC-32 as zlib's, then
 * the length, both big-endian), the CRC folded 16 bytes at a time with carry-less products where
 * the CPU has them (PCLMULQDQ), tables eight bytes at a time elsewhere and after the folds.
 *
 * outcome_messages: pipeline/outcome_messages.py's message of each outcome of a batch (orjson's text of
 * its row), the outcomes' slots read in place, their strs escaped as orjson escapes them and the
 * batch's floats written by one call of the caller's function (orjson through numpy); None where
 * an outcome holds a value of another type (a subclass, an int beyond 64 bits, a str with no
 * UTF-8), which Python then writes or refuses.
 *
 * slot_columns: each named attribute of a list of objects of one slotted class as a list (the
 * pipeline's records.py gathers the columns of stage 2's records from outcomes and reports so).
 *
 * id_keys: records.py's _id_key of each id of a list and zlib's CRC-32 of each key (the join's
 * group hash), or None where an id is not ASCII text (its UTF-8 is then records.py's to make).
 */
#define _GNU_SOURCE /* memmem */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <limits.h>
#include <math.h>
#include <string.h>
#ifndef Py_T_OBJECT_EX /* (before 3.12: structmember.h's name) */
#include <structmember.h>
#define Py_T_OBJECT_EX T_OBJECT_EX
#endif

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
#define PRED_SIZE 11 /* _PRED: flags u8, ctx id u32, shape id u16, label length u32 */
#define BUCKET_MS 1000 /* table.py's _BUCKET_MS */
#define REROUTED 4

static PyObject *append_name; /* "append", interned once: a time-index array's method */
static PyObject *get_name; /* "get": the pending store's read */
static PyObject *array_type, *typecode; /* array.array and "I": a new second's array of id hashes */

static uint32_t read_u32(const unsigned char *p) {
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

/* Whether a METH_FASTCALL function got its `want` arguments; a TypeError naming it where not. */
static int takes(const char *fn, Py_ssize_t nargs, Py_ssize_t want) {
    if (nargs == want) return 1;
    PyErr_Format(PyExc_TypeError, "%s takes %zd arguments", fn, want);
    return 0;
}

static int64_t read_i64(const unsigned char *p) {
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--) v = v << 8 | p[i];
    return (int64_t)v;
}

static void write_u32(unsigned char *p, uint32_t v) {
    for (int i = 0; i < 4; i++) p[i] = (unsigned char)(v >> (8 * i));
}

static void write_i64(unsigned char *p, int64_t v) {
    for (int i = 0; i < 8; i++) p[i] = (unsigned char)((uint64_t)v >> (8 * i));
}

/* An int attribute of the join, as a C long long (-1 and an exception if it is none). */
static long long int_attr(PyObject *obj, const char *name) {
    PyObject *value = PyObject_GetAttrString(obj, name);
    if (value == NULL) return -1;
    long long out = PyLong_AsLongLong(value);
    Py_DECREF(value);
    return out;
}

/* An int attribute that may be beyond 64 bits (a bound a user set), clamped to them. */
static long long clamped_attr(PyObject *obj, const char *name) {
    PyObject *value = PyObject_GetAttrString(obj, name);
    if (value == NULL) return -1;
    int overflow = 0;
    long long out = PyLong_AsLongLongAndOverflow(value, &overflow);
    Py_DECREF(value);
    if (overflow) return overflow > 0 ? LLONG_MAX : LLONG_MIN;
    return out;
}

static int set_int_attr(PyObject *obj, const char *name, long long v) {
    PyObject *value = PyLong_FromLongLong(v);
    if (value == NULL) return -1;
    int failed = PyObject_SetAttrString(obj, name, value);
    Py_DECREF(value);
    return failed;
}

/* Where `key` first occurs in data[from:size], or -1 (bytes.find). */
static Py_ssize_t find(const char *data, Py_ssize_t size, const char *key, Py_ssize_t klen, Py_ssize_t from) {
    if (klen == 0 || size - from < klen) return -1;
    const char *at = memmem(data + from, (size_t)(size - from), key, (size_t)klen);
    return at == NULL ? -1 : at - data;
}

static int as_list(PyObject *obj, const char *name) {
    if (!PyList_CheckExact(obj)) {
        PyErr_Format(PyExc_TypeError, "%s must be a list", name);
        return 0;
    }
    return 1;
}

/* close_pending(groups, keys, crcs, timestamps, digests, pids, labels, start, stop, room, low_mask,
 *               split, horizon, added, store, rerouted, joined, closings)
 *   -> (index of the first label not handled, records closed)
 * An exception (out of memory) leaves the records closed so far closed but not counted, as an
 * exception in the Python loop leaves it part done: the shard fails and restarts from its
 * checkpoint, never going on with that state. */
static PyObject *close_pending(PyObject *module, PyObject *const *args, Py_ssize_t nargs) {
    (void)module;
    if (!takes("close_pending", nargs, 18)) return NULL;
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
    int overflow = 0;
    long long horizon = PyLong_AsLongLongAndOverflow(args[12], &overflow);
    if (overflow) horizon = overflow > 0 ? LLONG_MAX : LLONG_MIN;  /* a bound a user set */
    PyObject *store = args[14];  /* the pending store spilled payloads are in, or None */
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
        int spilled = (udata[body] & SPILLED) && store != Py_None;
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
        PyObject *item;
        if (spilled) {  /* the stub to the flags..label length, then the payload read back: all the
                         * outcome reads */
            Py_ssize_t payload_at = body + PRED_SIZE;
            PyObject *ref = PyBytes_FromStringAndSize(data + payload_at, end - payload_at);
            PyObject *payload = ref == NULL ? NULL : PyObject_CallMethodOneArg(store, get_name, ref);
            Py_XDECREF(ref);
            if (payload == NULL || !PyBytes_Check(payload)) {
                if (payload != NULL) PyErr_SetString(PyExc_TypeError, "the pending store gives bytes");
                Py_XDECREF(payload);
                Py_DECREF(fresh);
                return NULL;
            }
            Py_ssize_t stub = payload_at - pos, size_read = PyBytes_GET_SIZE(payload);
            PyObject *record = PyBytes_FromStringAndSize(NULL, stub + size_read);
            if (record == NULL) { Py_DECREF(payload); Py_DECREF(fresh); return NULL; }
            memcpy(PyBytes_AS_STRING(record), data + pos, (size_t)stub);
            memcpy(PyBytes_AS_STRING(record) + stub, PyBytes_AS_STRING(payload), (size_t)size_read);
            Py_DECREF(payload);
            item = Py_BuildValue("(ONnnOOO)", PyList_GET_ITEM(pids, i), record, at, stub + size_read,
                                 PyList_GET_ITEM(stamps, i), PyList_GET_ITEM(labels, i), rerouted);
        } else {
            item = Py_BuildValue("(OOnnOOO)", PyList_GET_ITEM(pids, i), group, pos + at, end,
                                 PyList_GET_ITEM(stamps, i), PyList_GET_ITEM(labels, i), rerouted);
        }
        if (item == NULL) { Py_DECREF(fresh); return NULL; }
        int failed = PyList_Append(joined, item);  /* holds the old group for the outcome's reads */
        Py_DECREF(item);
        if (failed) { Py_DECREF(fresh); return NULL; }
        PyList_SetItem(groups, (Py_ssize_t)gid, fresh);  /* steals fresh, releases the old group */
        closed++;
    }
    return Py_BuildValue("(nn)", i, closed);
}

/* table.py's _split_group: the group at the split pointer split between itself (records whose
 * CRC-32 has the `low` bit clear) and a new last group, each keeping its records' order; the
 * pointer moves on, and the table doubles `low` once it passes it. 0, or -1 and an exception. */
static int split_group(PyObject *groups, long long *low, long long *split) {
    if (*split < 0 || *split >= PyList_GET_SIZE(groups)) {
        PyErr_SetString(PyExc_ValueError, "split_group: the split pointer is past the groups");
        return -1;
    }
    PyObject *group = PyList_GET_ITEM(groups, *split);
    if (!PyBytes_CheckExact(group)) {
        PyErr_SetString(PyExc_TypeError, "split_group: a group is bytes");
        return -1;
    }
    const unsigned char *data = (const unsigned char *)PyBytes_AS_STRING(group);
    Py_ssize_t size = PyBytes_GET_SIZE(group), pos = 0, moved = 0;
    while (pos < size) {  /* the bytes that move, first: both groups are allocated at their size */
        if (pos + HEAD_SIZE > size) goto corrupt;
        uint32_t length = read_u32(data + pos);
        if (length < HEAD_SIZE || pos + length > size) goto corrupt;
        if (read_u32(data + pos + 4) & (uint32_t)*low) moved += length;
        pos += length;
    }
    PyObject *stay = PyBytes_FromStringAndSize(NULL, size - moved);
    if (stay == NULL) return -1;
    PyObject *move = PyBytes_FromStringAndSize(NULL, moved);
    if (move == NULL) { Py_DECREF(stay); return -1; }
    char *to_stay = PyBytes_AS_STRING(stay), *to_move = PyBytes_AS_STRING(move);
    for (pos = 0; pos < size;) {
        uint32_t length = read_u32(data + pos);
        if (read_u32(data + pos + 4) & (uint32_t)*low) {
            memcpy(to_move, data + pos, length);
            to_move += length;
        } else {
            memcpy(to_stay, data + pos, length);
            to_stay += length;
        }
        pos += length;
    }
    int failed = PyList_Append(groups, move);
    Py_DECREF(move);
    if (failed) { Py_DECREF(stay); return -1; }
    PyList_SetItem(groups, *split, stay);  /* steals stay */
    *split += 1;
    if (*split == *low) {
        *low *= 2;
        *split = 0;
    }
    return 0;
corrupt:
    PyErr_SetString(PyExc_ValueError, "split_group: a group that does not parse as records");
    return -1;
}


/* The counts add_pending keeps in C while it runs, written back to the join whatever happens. */
typedef struct {
    long long records, estimate, pending;
} Counts;

static int write_counts(PyObject *join, const Counts *c) {
    if (set_int_attr(join, "_records", c->records) || set_int_attr(join, "_estimate", c->estimate)
        || set_int_attr(join, "_pending", c->pending))
        return -1;
    return 0;
}

/* add_pending(join, keys, crcs, pids, timestamps, contexts, digests, tails, packs, start, stop, shape_id,
 *             rerouted, load) -> index of the first prediction not handled */
static PyObject *add_pending(PyObject *module, PyObject *const *args, Py_ssize_t nargs) {
    (void)module;
    if (!takes("add_pending", nargs, 14)) return NULL;
    PyObject *join = args[0], *keys = args[1], *crcs = args[2], *pids = args[3], *stamps = args[4];
    PyObject *contexts = args[5], *digests = args[6], *tails = args[7], *packs = args[8];
    if (!as_list(keys, "keys") || !as_list(crcs, "crcs") || !as_list(pids, "pids")
        || !as_list(stamps, "timestamps") || !as_list(contexts, "contexts") || !as_list(digests, "digests")
        || !as_list(tails, "tails") || !as_list(packs, "packs"))
        return NULL;
    Py_ssize_t n = PyList_GET_SIZE(keys);
    if (PyList_GET_SIZE(crcs) != n || PyList_GET_SIZE(pids) != n || PyList_GET_SIZE(stamps) != n
        || PyList_GET_SIZE(contexts) != n || PyList_GET_SIZE(digests) != n || PyList_GET_SIZE(tails) != n
        || PyList_GET_SIZE(packs) != n) {
        PyErr_SetString(PyExc_ValueError, "add_pending: a value per prediction in every list");
        return NULL;
    }
    Py_ssize_t start = PyLong_AsSsize_t(args[9]), stop = PyLong_AsSsize_t(args[10]);
    long long shape_id = PyLong_AsLongLong(args[11]);
    int rerouted = PyObject_IsTrue(args[12]);
    long long load = PyLong_AsLongLong(args[13]);
    if (PyErr_Occurred()) return NULL;
    if (shape_id < 0 || shape_id > 0xFFFF) {
        PyErr_SetString(PyExc_ValueError, "add_pending: a shape id is 16 bits");
        return NULL;
    }
    if (start < 0) start = 0;
    if (stop > n) stop = n;

    PyObject *through = PyObject_GetAttrString(join, "_through");
    if (through == NULL) return NULL;
    int spilling_all = PyObject_IsTrue(through);
    Py_DECREF(through);
    if (spilling_all < 0) return NULL;
    if (spilling_all) return PyLong_FromSsize_t(start);  /* each record goes to the store: Python */

    PyObject *groups = NULL, *buckets = NULL, *added = NULL, *ctx_ids = NULL, *held_ids = NULL;
    PyObject *unspilled = NULL, *evict_key_obj = NULL, *bucket = NULL, *bucket_keys = NULL;
    PyObject *result = NULL;
    Counts c;
    c.records = int_attr(join, "_records");
    c.estimate = int_attr(join, "_estimate");
    c.pending = int_attr(join, "_pending");
    long long low = int_attr(join, "_low"), split = int_attr(join, "_split");
    long long check_at = clamped_attr(join, "_check_at"), label_wm = clamped_attr(join, "_label_wm");
    long long horizon = clamped_attr(join, "horizon_ms"), max_pending = clamped_attr(join, "max_pending");
    if (PyErr_Occurred()) return NULL;
    groups = PyObject_GetAttrString(join, "_groups");
    buckets = PyObject_GetAttrString(join, "_buckets");
    added = PyObject_GetAttrString(join, "_added");
    ctx_ids = PyObject_GetAttrString(join, "_ctx_ids");
    held_ids = PyObject_GetAttrString(join, "_held_ids");
    unspilled = PyObject_GetAttrString(join, "_unspilled");
    evict_key_obj = PyObject_GetAttrString(join, "_evict_key");
    bucket_keys = PyObject_GetAttrString(join, "_bucket_keys");
    if (bucket_keys == NULL || evict_key_obj == NULL || unspilled == NULL || held_ids == NULL || ctx_ids == NULL || added == NULL
        || buckets == NULL || groups == NULL)
        goto done;
    if (!PyList_CheckExact(groups) || !PyDict_CheckExact(buckets) || !PyDict_CheckExact(ctx_ids)
        || !PyList_CheckExact(bucket_keys)
        || !PyDict_CheckExact(held_ids) || (added != Py_None && !PySet_Check(added))
        || (unspilled != Py_None && !PySet_Check(unspilled))) {
        PyErr_SetString(PyExc_TypeError, "add_pending: the join's state is not of the expected types");
        goto done;
    }
    int evicting = evict_key_obj != Py_None;
    long long evict_key = 0;
    if (evicting) {  /* a second of event time: beyond 64 bits, every record's second is under it */
        int overflow = 0;
        evict_key = PyLong_AsLongLongAndOverflow(evict_key_obj, &overflow);
        if (overflow) evict_key = overflow > 0 ? LLONG_MAX : LLONG_MIN;
    }
    if (PyErr_Occurred()) goto done;
    int held = PyDict_GET_SIZE(held_ids) > 0;
    long long bucket_second = 0;  /* the second whose array `bucket` is (none yet) */

    Py_ssize_t i = start;
    for (; i < stop; i++) {
        PyObject *key_obj = PyList_GET_ITEM(keys, i), *digest_obj = PyList_GET_ITEM(digests, i);
        PyObject *tail = PyList_GET_ITEM(tails, i), *packed = PyList_GET_ITEM(packs, i);
        if (!PyBytes_CheckExact(key_obj) || !PyBytes_CheckExact(digest_obj)
            || PyBytes_GET_SIZE(digest_obj) != DIGEST_SIZE || !PyBytes_CheckExact(packed)
            || !PyTuple_CheckExact(tail) || PyTuple_GET_SIZE(tail) != 3
            || !PyBytes_CheckExact(PyTuple_GET_ITEM(tail, 2)))
            break;
        long long flags = PyLong_AsLongLong(PyTuple_GET_ITEM(tail, 0));
        long long label_len = PyLong_AsLongLong(PyTuple_GET_ITEM(tail, 1));
        unsigned long crc = PyLong_AsUnsignedLong(PyList_GET_ITEM(crcs, i));
        long long ts = PyLong_AsLongLong(PyList_GET_ITEM(stamps, i));
        if (PyErr_Occurred()) {  /* not a value C holds: Python's ints take it */
            PyErr_Clear();
            break;
        }
        if (flags < 0 || flags > 0xFF || label_len < 0 || label_len > 0xFFFFFFFFLL || crc > 0xFFFFFFFFUL) break;
        long long gid = (long long)(crc & (unsigned long)(low - 1));
        if (gid < split) gid = (long long)(crc & (unsigned long)(2 * low - 1));
        if (gid >= PyList_GET_SIZE(groups)) break;
        PyObject *group = PyList_GET_ITEM(groups, gid);
        if (!PyBytes_CheckExact(group)) break;
        Py_ssize_t klen = PyBytes_GET_SIZE(key_obj), size = PyBytes_GET_SIZE(group);
        if (find(PyBytes_AS_STRING(group), size, PyBytes_AS_STRING(key_obj), klen, 0) >= 0) break;
        if (held) {
            int claimed = PyDict_Contains(held_ids, PyList_GET_ITEM(pids, i));
            if (claimed < 0) goto done;
            if (claimed) break;
        }
        PyObject *ctx_id_obj = PyDict_GetItemWithError(ctx_ids, PyList_GET_ITEM(contexts, i));
        if (ctx_id_obj == NULL) {
            if (PyErr_Occurred()) goto done;
            break;
        }
        long long ctx_id = PyLong_AsLongLong(ctx_id_obj);
        if (PyErr_Occurred()) goto done;
        long long second = ts / BUCKET_MS - (ts % BUCKET_MS < 0);  /* floor, as Python's // */
        if (unspilled != Py_None || bucket == NULL || second != bucket_second) {
            PyObject *found_key = PyLong_FromLongLong(second);
            if (found_key == NULL) goto done;
            if (unspilled != Py_None) {
                int known = PySet_Contains(unspilled, found_key);
                if (known <= 0) {
                    Py_DECREF(found_key);
                    if (known < 0) goto done;
                    break;
                }
            }
            PyObject *found = PyDict_GetItemWithError(buckets, found_key);
            Py_DECREF(found_key);
            if (found == NULL) {
                if (PyErr_Occurred()) goto done;
                /* a new second: made below, once the record is sure to go in, if it comes after
                 * every second the index holds (else Python inserts it among them) */
                Py_ssize_t held_seconds = PyList_GET_SIZE(bucket_keys);
                if (held_seconds) {
                    long long last = PyLong_AsLongLong(PyList_GET_ITEM(bucket_keys, held_seconds - 1));
                    if (last == -1 && PyErr_Occurred()) goto done;
                    if (last >= second) break;
                }
                Py_CLEAR(bucket);
            } else {
                Py_INCREF(found);
                Py_XSETREF(bucket, found);
            }
            bucket_second = second;
        }
        PyObject *output = PyTuple_GET_ITEM(tail, 2);
        Py_ssize_t olen = PyBytes_GET_SIZE(output), flen = PyBytes_GET_SIZE(packed);
        Py_ssize_t head = HEAD_SIZE + klen + BODY + PRED_SIZE, reclen = head + olen + flen;
        long long due;
        if (reclen > 0xFFFFFFFFLL || c.estimate + reclen > check_at
            || __builtin_add_overflow(ts, horizon, &due) || due < label_wm
            || (evicting && second <= evict_key) || c.pending + 1 > max_pending)
            break;
        /* every test passed: the record goes in */
        PyObject *grown = PyBytes_FromStringAndSize(NULL, size + reclen);
        if (grown == NULL) goto done;
        unsigned char *rec = (unsigned char *)PyBytes_AS_STRING(grown);
        memcpy(rec, PyBytes_AS_STRING(group), (size_t)size);
        rec += size;
        write_u32(rec, (uint32_t)reclen);
        write_u32(rec + 4, (uint32_t)crc);
        memcpy(rec + HEAD_SIZE, PyBytes_AS_STRING(key_obj), (size_t)klen);
        unsigned char *after = rec + HEAD_SIZE + klen;
        write_i64(after, ts);
        after[8] = PENDING;
        memcpy(after + TS_SIZE, PyBytes_AS_STRING(digest_obj), DIGEST_SIZE);
        unsigned char *pred = after + BODY;
        pred[0] = (unsigned char)(rerouted ? (flags | REROUTED) : flags);
        write_u32(pred + 1, (uint32_t)ctx_id);
        pred[5] = (unsigned char)(shape_id & 0xFF);
        pred[6] = (unsigned char)(shape_id >> 8);
        write_u32(pred + 7, (uint32_t)label_len);
        memcpy(pred + PRED_SIZE, PyBytes_AS_STRING(output), (size_t)olen);
        memcpy(pred + PRED_SIZE + olen, PyBytes_AS_STRING(packed), (size_t)flen);
        if (added != Py_None) {  /* how the record starts after its head: id key, time */
            PyObject *keyed = PyBytes_FromStringAndSize((const char *)rec + HEAD_SIZE, klen + 8);
            if (keyed == NULL) { Py_DECREF(grown); goto done; }
            int failed = PySet_Add(added, keyed);
            Py_DECREF(keyed);
            if (failed) { Py_DECREF(grown); goto done; }
        }
        if (bucket == NULL) {  /* the new second's array, its key last in the sorted keys */
            PyObject *second_key = PyLong_FromLongLong(second);
            bucket = second_key == NULL ? NULL : PyObject_CallOneArg(array_type, typecode);
            if (bucket == NULL || PyDict_SetItem(buckets, second_key, bucket) < 0
                || PyList_Append(bucket_keys, second_key) < 0) {
                Py_XDECREF(second_key);
                Py_DECREF(grown);
                goto done;
            }
            Py_DECREF(second_key);
        }
        PyObject *crc_obj = PyList_GET_ITEM(crcs, i);
        PyObject *appended = PyObject_CallMethodOneArg(bucket, append_name, crc_obj);
        if (appended == NULL) { Py_DECREF(grown); goto done; }
        Py_DECREF(appended);
        PyList_SetItem(groups, (Py_ssize_t)gid, grown);  /* steals grown, releases the old group */
        c.records += 1;
        c.estimate += reclen;
        c.pending += 1;
        while (c.records > load * PyList_GET_SIZE(groups)) {  /* the table grows as Python's _add */
            if (split_group(groups, &low, &split) || set_int_attr(join, "_low", low)
                || set_int_attr(join, "_split", split))
                goto done;
        }
    }
    result = PyLong_FromSsize_t(i);
done:
    {  /* the records added are in the groups: their counts go back to the join even on an error */
        PyObject *type, *value, *traceback;
        PyErr_Fetch(&type, &value, &traceback);
        if (write_counts(join, &c)) {
            Py_CLEAR(result);
            Py_XDECREF(type);
            Py_XDECREF(value);
            Py_XDECREF(traceback);
        } else {
            PyErr_Restore(type, value, traceback);
        }
    }
    Py_XDECREF(groups);
    Py_XDECREF(buckets);
    Py_XDECREF(added);
    Py_XDECREF(ctx_ids);
    Py_XDECREF(held_ids);
    Py_XDECREF(unspilled);
    Py_XDECREF(evict_key_obj);
    Py_XDECREF(bucket);
    Py_XDECREF(bucket_keys);
    return result;
}


static double read_f64(const unsigned char *p) {
    uint64_t bits = (uint64_t)read_i64(p);
    double out;
    memcpy(&out, &bits, sizeof out);
    return out;
}

/* Where attribute `name` of `cls`'s objects lives: its slot's offset in them, or -1 where it is
 * not an object slot (no such attribute, a property, a slot of another kind), with no exception. */
static Py_ssize_t slot_offset(PyObject *cls, PyObject *name) {
    PyObject *slot = PyObject_GetAttr(cls, name);
    Py_ssize_t offset = -1;
    if (slot != NULL && Py_IS_TYPE(slot, &PyMemberDescr_Type)
        && ((PyMemberDescrObject *)slot)->d_member->type == Py_T_OBJECT_EX)
        offset = ((PyMemberDescrObject *)slot)->d_member->offset;
    Py_XDECREF(slot);
    PyErr_Clear();
    return offset;
}

/* Where each of a slotted class's 16 fields lives in its objects (its __slots__, in field order:
 * a dataclass's __init__ sets them in that order and nothing else), or 0 where the class is not
 * that (no __slots__, another count, a slot of another kind, a __post_init__): then it is called. */
#define OUTCOME_FIELDS 16
static int slot_offsets(PyObject *cls, Py_ssize_t *offsets) {
    if (!PyType_Check(cls) || PyObject_HasAttrString(cls, "__post_init__")) return 0;
    PyObject *slots = PyObject_GetAttrString(cls, "__slots__");
    if (slots == NULL) {
        PyErr_Clear();
        return 0;
    }
    int ok = PyTuple_CheckExact(slots) && PyTuple_GET_SIZE(slots) == OUTCOME_FIELDS;
    for (Py_ssize_t j = 0; ok && j < OUTCOME_FIELDS; j++) {
        offsets[j] = slot_offset(cls, PyTuple_GET_ITEM(slots, j));
        ok = offsets[j] >= 0;
    }
    Py_DECREF(slots);
    return ok;
}

/* An object of `cls` holding `fields` in its slots, as its __init__ would set them (a call of the
 * dataclass's __init__ is ~280 ns, most of an outcome's making), untracked by the collector: every
 * value an outcome holds is a str, an int, a float or None (no cycle can pass through one). */
static PyObject *slotted(PyTypeObject *cls, const Py_ssize_t *offsets, PyObject *const *fields) {
    PyObject *made = cls->tp_alloc(cls, 0);
    if (made == NULL) return NULL;
    for (int j = 0; j < OUTCOME_FIELDS; j++) *(PyObject **)((char *)made + offsets[j]) = Py_NewRef(fields[j]);
    if (PyObject_IS_GC(made)) PyObject_GC_UnTrack(made);
    return made;
}

/* outcome_rows(joined, ctxs, labels, label_info, binary, max_abs, make)
 *   -> (outcomes without their features' JSON, shape id of each, features bytes of each)
 * joined: (prediction id, bytes, where the record's time is, where it ends, label time, label,
 * label re-routed) per label; ctxs: the join's contexts; labels: a dict this call caches each
 * distinct label's (text, value) in, label_info making them; binary: outputs.py's _BINARY. */
static PyObject *outcome_rows(PyObject *module, PyObject *const *args, Py_ssize_t nargs) {
    (void)module;
    if (!takes("outcome_rows", nargs, 7)) return NULL;
    PyObject *joined = args[0], *ctxs = args[1], *labels = args[2], *label_info = args[3];
    PyObject *binary = args[4], *make = args[6];
    double max_abs = PyFloat_AsDouble(args[5]);
    if (max_abs == -1.0 && PyErr_Occurred()) return NULL;
    if (!as_list(joined, "joined") || !as_list(ctxs, "ctxs")) return NULL;
    if (!PyDict_CheckExact(labels) || !PyDict_CheckExact(binary)) {
        PyErr_SetString(PyExc_TypeError, "outcome_rows: labels and binary must be dicts");
        return NULL;
    }
    Py_ssize_t n = PyList_GET_SIZE(joined);
    Py_ssize_t offsets[OUTCOME_FIELDS];
    int in_slots = slot_offsets(make, offsets);
    PyObject *outcomes = PyList_New(n), *shape_ids = PyList_New(n), *features = PyList_New(n);
    PyObject *empty = PyUnicode_FromStringAndSize("", 0);
    if (outcomes == NULL || shape_ids == NULL || features == NULL || empty == NULL) goto fail;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *item = PyList_GET_ITEM(joined, i);
        if (!PyTuple_CheckExact(item) || PyTuple_GET_SIZE(item) != 7 || !PyBytes_Check(PyTuple_GET_ITEM(item, 1))) {
            PyErr_SetString(PyExc_TypeError, "outcome_rows: a joined label is a 7-tuple holding bytes");
            goto fail;
        }
        PyObject *pid = PyTuple_GET_ITEM(item, 0), *data_obj = PyTuple_GET_ITEM(item, 1);
        PyObject *label_ts = PyTuple_GET_ITEM(item, 4), *label = PyTuple_GET_ITEM(item, 5);
        int label_rerouted = PyObject_IsTrue(PyTuple_GET_ITEM(item, 6));
        Py_ssize_t start = PyLong_AsSsize_t(PyTuple_GET_ITEM(item, 2));
        Py_ssize_t end = PyLong_AsSsize_t(PyTuple_GET_ITEM(item, 3));
        if (label_rerouted < 0 || PyErr_Occurred()) goto fail;
        const unsigned char *data = (const unsigned char *)PyBytes_AS_STRING(data_obj);
        /* after the id key: time (8), state (1), digest (8), flags (1), ctx id (4), shape id (2),
         * label length (4) */
        Py_ssize_t offset = start + BODY + PRED_SIZE;
        if (start < 0 || end > PyBytes_GET_SIZE(data_obj) || offset > end) {
            PyErr_SetString(PyExc_ValueError, "outcome_rows: a record out of its bytes");
            goto fail;
        }
        long long pred_ts = read_i64(data + start);
        unsigned flags = data[start + BODY];
        uint32_t ctx_id = read_u32(data + start + BODY + 1);
        unsigned shape_id = (unsigned)data[start + BODY + 5] | (unsigned)data[start + BODY + 6] << 8;
        uint32_t label_len = read_u32(data + start + BODY + 7);
        int has_score = (flags & 1) != 0, has_value = (flags & 2) != 0;
        double score = 0.0, value = 0.0;
        if (offset + 8 * (has_score + has_value) > end) {
            PyErr_SetString(PyExc_ValueError, "outcome_rows: a record out of its bytes");
            goto fail;
        }
        if (has_score) { score = read_f64(data + offset); offset += 8; }
        if (has_value) { value = read_f64(data + offset); offset += 8; }
        PyObject *text = NULL;  /* the prediction's class text, if any (new reference) */
        if (label_len != 0xFFFFFFFFu) {
            if (offset + (Py_ssize_t)label_len > end) {
                PyErr_SetString(PyExc_ValueError, "outcome_rows: a record out of its bytes");
                goto fail;
            }
            text = PyUnicode_DecodeUTF8((const char *)data + offset, label_len, NULL);
            if (text == NULL) goto fail;
            offset += label_len;
        }
        PyObject *feature_bytes = PyBytes_FromStringAndSize((const char *)data + offset, end - offset);
        PyObject *shape = PyLong_FromUnsignedLong(shape_id);
        if (feature_bytes == NULL || shape == NULL) {
            Py_XDECREF(feature_bytes); Py_XDECREF(shape); Py_XDECREF(text);
            goto fail;
        }
        PyList_SET_ITEM(features, i, feature_bytes);
        PyList_SET_ITEM(shape_ids, i, shape);
        /* the label's text and value, found once per distinct label (type and value) */
        PyObject *key = PyTuple_Pack(2, (PyObject *)Py_TYPE(label), label);
        if (key == NULL) { Py_XDECREF(text); goto fail; }
        PyObject *seen = PyDict_GetItemWithError(labels, key);  /* borrowed */
        if (seen == NULL) {
            if (PyErr_Occurred()) { Py_DECREF(key); Py_XDECREF(text); goto fail; }
            PyObject *made = PyObject_CallOneArg(label_info, label);
            if (made == NULL || PyDict_SetItem(labels, key, made) < 0) {
                Py_XDECREF(made); Py_DECREF(key); Py_XDECREF(text);
                goto fail;
            }
            Py_DECREF(made);  /* the dict holds it */
            seen = made;
        }
        Py_DECREF(key);
        if (!PyTuple_CheckExact(seen) || PyTuple_GET_SIZE(seen) != 2) {
            PyErr_SetString(PyExc_TypeError, "outcome_rows: label_info gives (text, value)");
            Py_XDECREF(text);
            goto fail;
        }
        PyObject *label_text = PyTuple_GET_ITEM(seen, 0), *label_value = PyTuple_GET_ITEM(seen, 1);
        int regression = has_value && text == NULL;
        PyObject *correct = Py_None;  /* new reference below where it is an int */
        Py_INCREF(correct);
        if (text != NULL) {
            int same = PyObject_RichCompareBool(text, label_text, Py_EQ);
            if (same < 0) { Py_DECREF(text); Py_DECREF(correct); goto fail; }
            Py_SETREF(correct, PyLong_FromLong(same));
        } else if (has_score) {
            PyObject *classes = PyDict_GetItemWithError(binary, label_text);
            if (classes == NULL && PyErr_Occurred()) { Py_DECREF(correct); goto fail; }
            if (classes != NULL) {
                if (!PyTuple_CheckExact(classes) || PyTuple_GET_SIZE(classes) != 2) {
                    PyErr_SetString(PyExc_TypeError, "outcome_rows: binary gives (positive, negative)");
                    Py_DECREF(correct);
                    goto fail;
                }
                text = PyTuple_GET_ITEM(classes, score >= 0.5 ? 0 : 1);
                Py_INCREF(text);
                int same = PyObject_RichCompareBool(text, label_text, Py_EQ);
                if (same < 0) { Py_DECREF(text); Py_DECREF(correct); goto fail; }
                Py_SETREF(correct, PyLong_FromLong(same));
            }
        }
        if (correct == NULL) { Py_XDECREF(text); goto fail; }
        PyObject *abs_error = Py_None;
        Py_INCREF(abs_error);
        if (has_value && label_value != Py_None) {
            double truth = PyFloat_AsDouble(label_value);
            if (truth == -1.0 && PyErr_Occurred()) { Py_XDECREF(text); Py_DECREF(correct); Py_DECREF(abs_error); goto fail; }
            double a = fabs(value), b = fabs(truth), largest = b > a ? b : a;  /* as Python's max(a, b) */
            if (largest <= max_abs) Py_SETREF(abs_error, PyFloat_FromDouble(fabs(value - truth)));
            if (abs_error == NULL) { Py_XDECREF(text); Py_DECREF(correct); goto fail; }
        }
        PyObject *ctx = ctx_id < (uint32_t)PyList_GET_SIZE(ctxs) ? PyList_GET_ITEM(ctxs, ctx_id) : NULL;
        if (ctx == NULL || !PyTuple_CheckExact(ctx) || PyTuple_GET_SIZE(ctx) != 3) {
            PyErr_SetString(PyExc_ValueError, "outcome_rows: a record's context is not the join's");
            Py_XDECREF(text); Py_DECREF(correct); Py_DECREF(abs_error);
            goto fail;
        }
        PyObject *pred_ts_obj = PyLong_FromLongLong(pred_ts);
        PyObject *delay = pred_ts_obj == NULL ? NULL : PyNumber_Subtract(label_ts, pred_ts_obj);
        PyObject *score_obj = has_score ? PyFloat_FromDouble(score) : Py_NewRef(Py_None);
        PyObject *value_obj = has_value ? PyFloat_FromDouble(value) : Py_NewRef(Py_None);
        PyObject *bits = PyLong_FromLong(((flags & REROUTED) ? 1 : 0) | (label_rerouted ? 2 : 0));
        PyObject *outcome = NULL;
        if (delay != NULL && score_obj != NULL && value_obj != NULL && bits != NULL) {
            PyObject *fields[OUTCOME_FIELDS] = {
                pid, PyTuple_GET_ITEM(ctx, 0), PyTuple_GET_ITEM(ctx, 1), PyTuple_GET_ITEM(ctx, 2),
                pred_ts_obj, label_ts, delay, text != NULL ? text : empty, score_obj, value_obj,
                regression ? empty : label_text, regression ? label_value : Py_None, correct, abs_error,
                empty, bits,
            };
            outcome = in_slots ? slotted((PyTypeObject *)make, offsets, fields)
                               : PyObject_Vectorcall(make, fields, OUTCOME_FIELDS, NULL);
        }
        Py_XDECREF(pred_ts_obj); Py_XDECREF(delay); Py_XDECREF(score_obj); Py_XDECREF(value_obj);
        Py_XDECREF(bits); Py_XDECREF(text); Py_DECREF(correct); Py_DECREF(abs_error);
        if (outcome == NULL) goto fail;
        PyList_SET_ITEM(outcomes, i, outcome);
    }
    Py_DECREF(empty);
    PyObject *result = PyTuple_Pack(3, outcomes, shape_ids, features);
    Py_DECREF(outcomes); Py_DECREF(shape_ids); Py_DECREF(features);
    return result;
fail:
    Py_XDECREF(outcomes); Py_XDECREF(shape_ids); Py_XDECREF(features); Py_XDECREF(empty);
    return NULL;
}


/* The texts of a JSON list's items, split at its commas: `count` of them (their starts and ends
 * into `at`) or -1 where the list splits into another number of pieces (a string holding a
 * comma), as bytes.split(b",") counts them. */
static Py_ssize_t split_items(const char *text, Py_ssize_t size, Py_ssize_t count, Py_ssize_t *at) {
    Py_ssize_t found = 0, start = 0;
    for (Py_ssize_t i = 0; i <= size; i++) {
        if (i == size || text[i] == ',') {
            if (found == count) return -1;
            at[2 * found] = start;
            at[2 * found + 1] = i;
            found++;
            start = i + 1;
        }
    }
    return found == count ? found : -1;
}

/* rows_json(encoded, float_size, floats_text, n_floats, n_others, key_texts, order) -> list[str] | None
 * encoded: each row's record features (packed doubles, then its other values' JSON list);
 * floats_text: orjson's JSON list of every row's floats in order (None without floats); key_texts:
 * per key, its text before the value ('{"name":' for the first, ',"name":' after); order: per key,
 * the index of its value among the row's floats then others. */
static PyObject *rows_json(PyObject *module, PyObject *const *args, Py_ssize_t nargs) {
    (void)module;
    if (!takes("rows_json", nargs, 7)) return NULL;
    PyObject *encoded = args[0], *floats_text = args[2], *key_texts = args[5], *order = args[6];
    Py_ssize_t float_size = PyLong_AsSsize_t(args[1]), n_floats = PyLong_AsSsize_t(args[3]);
    Py_ssize_t n_others = PyLong_AsSsize_t(args[4]);
    if (PyErr_Occurred()) return NULL;
    if (!as_list(encoded, "encoded") || !as_list(key_texts, "key_texts") || !as_list(order, "order")) return NULL;
    Py_ssize_t rows = PyList_GET_SIZE(encoded), width = n_floats + n_others;
    if (float_size < 0 || n_floats < 0 || n_others < 0 || PyList_GET_SIZE(key_texts) != width
        || PyList_GET_SIZE(order) != width || (n_floats > 0 && !PyBytes_CheckExact(floats_text))) {
        PyErr_SetString(PyExc_ValueError, "rows_json: a key text and a value index per key");
        return NULL;
    }
    Py_ssize_t *pos = PyMem_New(Py_ssize_t, 2 * (rows * n_floats + (n_others ? n_others : 1)) + 2);
    Py_ssize_t *slot = PyMem_New(Py_ssize_t, width ? width : 1);
    PyObject *out = NULL;
    if (pos == NULL || slot == NULL) { PyErr_NoMemory(); goto done; }
    Py_ssize_t keys_size = 1;  /* the closing brace */
    for (Py_ssize_t k = 0; k < width; k++) {
        PyObject *text = PyList_GET_ITEM(key_texts, k);
        if (!PyBytes_CheckExact(text)) { PyErr_SetString(PyExc_TypeError, "rows_json: key texts are bytes"); goto done; }
        keys_size += PyBytes_GET_SIZE(text);
        slot[k] = PyLong_AsSsize_t(PyList_GET_ITEM(order, k));
        if (slot[k] == -1 && PyErr_Occurred()) goto done;
        if (slot[k] < 0 || slot[k] >= width) { PyErr_SetString(PyExc_ValueError, "rows_json: a value index out of range"); goto done; }
    }
    const char *ftext = NULL;
    if (n_floats > 0) {  /* '[' v, v, ... ']': every row's floats in order */
        ftext = PyBytes_AS_STRING(floats_text);
        Py_ssize_t fsize = PyBytes_GET_SIZE(floats_text);
        if (fsize < 2 || ftext[0] != '[' || ftext[fsize - 1] != ']'
            || split_items(ftext + 1, fsize - 2, rows * n_floats, pos) < 0) {
            PyErr_SetString(PyExc_ValueError, "rows_json: the floats' text is not one value per float");
            goto done;
        }
        for (Py_ssize_t j = 0; j < 2 * rows * n_floats; j++) pos[j] += 1;  /* past the '[' */
    }
    Py_ssize_t *opos = pos + 2 * rows * n_floats;
    out = PyList_New(rows);
    if (out == NULL) goto done;
    char *buffer = NULL;
    Py_ssize_t capacity = 0;
    for (Py_ssize_t r = 0; r < rows; r++) {
        PyObject *record = PyList_GET_ITEM(encoded, r);
        if (!PyBytes_CheckExact(record) || PyBytes_GET_SIZE(record) < float_size) {
            PyErr_SetString(PyExc_ValueError, "rows_json: a record shorter than its floats");
            goto fail;
        }
        const char *others = PyBytes_AS_STRING(record) + float_size;
        Py_ssize_t osize = PyBytes_GET_SIZE(record) - float_size, size = keys_size;
        if (n_others > 0) {  /* its other values' list: '[' item, item ']' */
            if (osize < 2 || others[0] != '[' || others[osize - 1] != ']'
                || split_items(others + 1, osize - 2, n_others, opos) < 0) {
                PyMem_Free(buffer);
                Py_CLEAR(out);
                Py_INCREF(Py_None);
                out = Py_None;  /* an int beyond 64 bits or a comma in a string: Python's path */
                goto done;
            }
            for (Py_ssize_t j = 0; j < 2 * n_others; j++) opos[j] += 1;
            size += osize - 2 - (n_others - 1);
        }
        if (n_floats > 0)
            for (Py_ssize_t j = 0; j < n_floats; j++) {
                Py_ssize_t v = r * n_floats + j;
                size += pos[2 * v + 1] - pos[2 * v];
            }
        if (size > capacity) {
            char *grown = PyMem_Realloc(buffer, (size_t)size);
            if (grown == NULL) { PyErr_NoMemory(); goto fail; }
            buffer = grown;
            capacity = size;
        }
        char *w = buffer;
        for (Py_ssize_t k = 0; k < width; k++) {
            PyObject *text = PyList_GET_ITEM(key_texts, k);
            memcpy(w, PyBytes_AS_STRING(text), (size_t)PyBytes_GET_SIZE(text));
            w += PyBytes_GET_SIZE(text);
            Py_ssize_t v = slot[k], from, to;
            const char *base;
            if (v < n_floats) {
                base = ftext;
                from = pos[2 * (r * n_floats + v)];
                to = pos[2 * (r * n_floats + v) + 1];
            } else {
                base = others;
                from = opos[2 * (v - n_floats)];
                to = opos[2 * (v - n_floats) + 1];
            }
            memcpy(w, base + from, (size_t)(to - from));
            w += to - from;
        }
        *w++ = '}';
        if (w - buffer != size) {  /* the sizes above are the texts': a mismatch is a bug here */
            PyErr_SetString(PyExc_SystemError, "rows_json: a row's size miscounted");
            goto fail;
        }
        PyObject *row = PyUnicode_DecodeUTF8(buffer, w - buffer, NULL);
        if (row == NULL) goto fail;
        PyList_SET_ITEM(out, r, row);
    }
    PyMem_Free(buffer);
    goto done;
fail:
    PyMem_Free(buffer);
    Py_CLEAR(out);
done:
    PyMem_Free(pos);
    PyMem_Free(slot);
    return out;
}

/* ---- slot_columns ------------------------------------------------------------------------- */

/* slot_columns(objects, cls, names) -> list[list] | None: per name, the list of each object's value
 * of that attribute, read from its slot (list(map(attrgetter(name), objects)) without a Python call
 * per value); None where an object is not exactly of `cls` or a name is not one of its slots. */
static PyObject *slot_columns(PyObject *module, PyObject *const *args, Py_ssize_t nargs) {
    (void)module;
    if (!takes("slot_columns", nargs, 3)) return NULL;
    PyObject *objects = args[0], *cls = args[1], *names = args[2];
    if (!as_list(objects, "objects") || !PyTuple_CheckExact(names) || !PyType_Check(cls)) {
        PyErr_SetString(PyExc_TypeError, "slot_columns: a list, a class and a tuple of names");
        return NULL;
    }
    Py_ssize_t n = PyList_GET_SIZE(objects), k = PyTuple_GET_SIZE(names);
    Py_ssize_t *offsets = PyMem_New(Py_ssize_t, k ? k : 1);
    if (offsets == NULL) return PyErr_NoMemory();
    PyObject *columns = NULL;
    for (Py_ssize_t j = 0; j < k; j++)
        if ((offsets[j] = slot_offset(cls, PyTuple_GET_ITEM(names, j))) < 0) goto other;
    for (Py_ssize_t i = 0; i < n; i++)
        if ((PyObject *)Py_TYPE(PyList_GET_ITEM(objects, i)) != cls) goto other;
    columns = PyList_New(k);
    if (columns == NULL) goto fail;
    for (Py_ssize_t j = 0; j < k; j++) {
        PyObject *column = PyList_New(n);
        if (column == NULL) goto fail;
        PyList_SET_ITEM(columns, j, column);
        for (Py_ssize_t i = 0; i < n; i++) {
            PyObject *v = *(PyObject **)((char *)PyList_GET_ITEM(objects, i) + offsets[j]);
            if (v == NULL) goto other; /* (unset: attrgetter's AttributeError, from Python) */
            PyList_SET_ITEM(column, i, Py_NewRef(v));
        }
    }
    PyMem_Free(offsets);
    return columns;
other:
    PyErr_Clear();
    PyMem_Free(offsets);
    Py_XDECREF(columns);
    Py_RETURN_NONE;
fail:
    PyMem_Free(offsets);
    Py_XDECREF(columns);
    return NULL;
}

/* ---- outcome_messages --------------------------------------------------------------------- */

/* A growing output buffer. */
typedef struct {
    char *data;
    Py_ssize_t size, room;
} Out;

static int out_room(Out *out, Py_ssize_t more) {
    if (out->size + more <= out->room) return 1;
    Py_ssize_t room = out->room ? out->room : 1024;
    while (room < out->size + more) room *= 2;
    char *grown = PyMem_Realloc(out->data, (size_t)room);
    if (grown == NULL) {
        PyErr_NoMemory();
        return 0;
    }
    out->data = grown;
    out->room = room;
    return 1;
}

static int out_put(Out *out, const char *text, Py_ssize_t n) {
    if (!out_room(out, n)) return 0;
    memcpy(out->data + out->size, text, (size_t)n);
    out->size += n;
    return 1;
}

/* `n` bytes with a backslash before each '"' and '\', written at `to` (room for 2n + 16 bytes);
 * where it goes on, and in *control whether a control character is among them. Eight bytes at a
 * time where the CPU shuffles bytes (SSSE3): one shuffle per eight puts the backslashes in (its
 * control picked by which of the eight need one, a table of 256); a byte at a time, without a
 * branch, elsewhere and for the last few (a JSON text of features holds a quote every few bytes:
 * a branch per byte mispredicts, and a byte at a time was ~1.4 ns a byte, most of the message). */
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>
#define HAVE_SHUFFLE 1
/* (the lengths are 8 + popcount(mask), kept as a table: a software popcount in the loop measured
 * ~25 % slower) */
static unsigned char quote_shuffles[256][16], quote_lengths[256];
static int have_shuffle;

static void quote_shuffles_init(void) {
    for (int m = 0; m < 256; m++) {
        int at = 0;
        for (int i = 0; i < 8; i++) {
            if (m >> i & 1) quote_shuffles[m][at++] = 8; /* (bytes 8-15 of the source: backslashes) */
            quote_shuffles[m][at++] = (unsigned char)i;
        }
        quote_lengths[m] = (unsigned char)at;
        while (at < 16) quote_shuffles[m][at++] = 0x80;
    }
}

__attribute__((target("ssse3")))
static char *quoted_by_shuffles(char *to, const unsigned char *s, Py_ssize_t n, Py_ssize_t *done, unsigned *control) {
    const __m128i quote = _mm_set1_epi8('"'), backslash = _mm_set1_epi8('\\'), below = _mm_set1_epi8(0x1F);
    Py_ssize_t i = 0;
    unsigned seen = 0;
    for (; i + 8 <= n; i += 8) {
        __m128i v = _mm_loadl_epi64((const __m128i *)(s + i));
        int m = _mm_movemask_epi8(_mm_or_si128(_mm_cmpeq_epi8(v, quote), _mm_cmpeq_epi8(v, backslash))) & 0xFF;
        seen |= (unsigned)_mm_movemask_epi8(_mm_cmpeq_epi8(_mm_min_epu8(v, below), v)) & 0xFF;
        __m128i out = _mm_shuffle_epi8(_mm_unpacklo_epi64(v, backslash),
                                       _mm_loadu_si128((const __m128i *)quote_shuffles[m]));
        _mm_storeu_si128((__m128i *)to, out);
        to += quote_lengths[m];
    }
    *done = i;
    *control |= seen != 0;
    return to;
}
#endif

static char *quoted(char *to, const unsigned char *s, Py_ssize_t n, unsigned *control) {
    Py_ssize_t i = 0;
#ifdef HAVE_SHUFFLE
    if (have_shuffle) to = quoted_by_shuffles(to, s, n, &i, control);
#endif
    for (; i < n; i++) {
        unsigned char b = s[i];
        int quote = b == '"' || b == '\\';
        to[0] = '\\';
        to[quote] = (char)b;
        to += 1 + quote;
        *control |= b < 0x20;
    }
    return to;
}

/* A str as orjson writes it: UTF-8 as it is, '"' and '\' and control characters escaped. 1, 0 out
 * of memory (raised), -1 where it has no UTF-8 (a lone surrogate, which orjson refuses). */
static int out_text(Out *out, PyObject *text) {
    Py_ssize_t n;
    const unsigned char *s = (const unsigned char *)PyUnicode_AsUTF8AndSize(text, &n);
    if (s == NULL) {
        PyErr_Clear();
        return -1;
    }
    if (!out_room(out, 6 * n + 18)) return 0; /* (\u00XX: six bytes at most for each) */
    char *to = out->data + out->size;
    *to++ = '"';
    /* Quotes and backslashes first, and again with a branch per byte if a control character is
     * among the bytes (rare: a newline inside a value). */
    char *start = to;
    unsigned control = 0;
    to = quoted(to, s, n, &control);
    if (control) to = start;
    for (Py_ssize_t i = 0; control && i < n; i++) {
        unsigned char b = s[i];
        if (b >= 0x20 && b != '"' && b != '\\') {
            *to++ = (char)b;
            continue;
        }
        *to++ = '\\';
        switch (b) {
        case '"': *to++ = '"'; break;
        case '\\': *to++ = '\\'; break;
        case '\b': *to++ = 'b'; break;
        case '\t': *to++ = 't'; break;
        case '\n': *to++ = 'n'; break;
        case '\f': *to++ = 'f'; break;
        case '\r': *to++ = 'r'; break;
        default:
            *to++ = 'u';
            *to++ = '0';
            *to++ = '0';
            *to++ = "0123456789abcdef"[b >> 4];
            *to++ = "0123456789abcdef"[b & 15];
        }
    }
    *to++ = '"';
    out->size = to - out->data;
    return 1;
}

/* An int's decimal text (snprintf's, without its cost: ~3 of an outcome's 15 values). */
static int out_int(Out *out, long long x) {
    char digits[24];
    char *end = digits + sizeof digits, *at = end;
    unsigned long long u = x < 0 ? 0ULL - (unsigned long long)x : (unsigned long long)x;
    do {
        *--at = (char)('0' + u % 10);
        u /= 10;
    } while (u);
    if (x < 0) *--at = '-';
    return out_put(out, at, end - at);
}

#define MAX_MESSAGE_FIELDS 32

/* outcome_messages(outcomes, cls, prefix, fields, floats_json) -> list[bytes] | None
 * Each outcome (an instance of the slotted class `cls`, exactly) as a JSON object: `prefix` (the
 * object's open and first members, as JSON text), then per field of `fields` (key text, e.g.
 * b',"name":', and the attribute it reads) the attribute's value as orjson writes it: None, bools,
 * ints within 64 bits and strs as orjson does, floats as floats_json (orjson through numpy) writes
 * the batch's floats packed in order, then '}'. None where an outcome holds something else (then
 * Python writes them). */
static PyObject *outcome_messages(PyObject *module, PyObject *const *args, Py_ssize_t nargs) {
    (void)module;
    if (!takes("outcome_messages", nargs, 5)) return NULL;
    PyObject *outcomes = args[0], *cls = args[1], *prefix = args[2], *fields = args[3], *floats_json = args[4];
    if (!as_list(outcomes, "outcomes") || !as_list(fields, "fields")) return NULL;
    if (!PyType_Check(cls) || !PyBytes_CheckExact(prefix) || PyList_GET_SIZE(fields) > MAX_MESSAGE_FIELDS) {
        PyErr_SetString(PyExc_TypeError, "outcome_messages: a class, a prefix's bytes, at most 32 fields");
        return NULL;
    }
    Py_ssize_t n = PyList_GET_SIZE(outcomes), k = PyList_GET_SIZE(fields);
    Py_ssize_t offsets[MAX_MESSAGE_FIELDS];
    PyObject *keys[MAX_MESSAGE_FIELDS];
    for (Py_ssize_t j = 0; j < k; j++) { /* each attribute's slot in the objects */
        PyObject *field = PyList_GET_ITEM(fields, j);
        if (!PyTuple_CheckExact(field) || PyTuple_GET_SIZE(field) != 2
            || !PyBytes_CheckExact(PyTuple_GET_ITEM(field, 0))) {
            PyErr_SetString(PyExc_TypeError, "outcome_messages: a field is (key text, attribute name)");
            return NULL;
        }
        keys[j] = PyTuple_GET_ITEM(field, 0);
        offsets[j] = slot_offset(cls, PyTuple_GET_ITEM(field, 1));
        if (offsets[j] < 0) Py_RETURN_NONE; /* (not a slot: Python reads it) */
    }
    /* every outcome of the class with its slots set, and the floats in order, in one pass; then
     * the floats written at once (little-endian doubles, as floats_json reads them) */
    Py_ssize_t values = n * k;
    double *doubles = PyMem_New(double, values > 0 ? values : 1);
    if (doubles == NULL) return PyErr_NoMemory();
    Py_ssize_t floats = 0;
    int taken = 1;
    for (Py_ssize_t i = 0; taken && i < n; i++) {
        PyObject *o = PyList_GET_ITEM(outcomes, i);
        taken = (PyObject *)Py_TYPE(o) == cls;
        for (Py_ssize_t j = 0; taken && j < k; j++) {
            PyObject *v = *(PyObject **)((char *)o + offsets[j]);
            taken = v != NULL; /* (an unset slot: Python's to read, or refuse) */
            if (taken && PyFloat_CheckExact(v)) doubles[floats++] = PyFloat_AS_DOUBLE(v);
        }
    }
    if (!taken) {
        PyMem_Free(doubles);
        Py_RETURN_NONE;
    }
    PyObject *packed = PyBytes_FromStringAndSize(NULL, floats * 8);
    if (packed == NULL) {
        PyMem_Free(doubles);
        return NULL;
    }
    unsigned char *at = (unsigned char *)PyBytes_AS_STRING(packed);
    for (Py_ssize_t f = 0; f < floats; f++) {
        uint64_t bits;
        memcpy(&bits, &doubles[f], 8);
        for (int b = 0; b < 8; b++) *at++ = (unsigned char)(bits >> (8 * b));
    }
    PyMem_Free(doubles);
    PyObject *texts = floats ? PyObject_CallOneArg(floats_json, packed) : NULL;
    Py_DECREF(packed);
    if (floats && texts == NULL) return NULL;
    Py_ssize_t *spans = PyMem_New(Py_ssize_t, 2 * (floats ? floats : 1));
    PyObject *messages = PyList_New(n);
    Out out = {NULL, 0, 0};
    if (spans == NULL || messages == NULL) {
        if (spans == NULL) PyErr_NoMemory();
        goto fail;
    }
    const char *text = NULL;
    if (floats) {
        Py_ssize_t size = PyBytes_Check(texts) ? PyBytes_GET_SIZE(texts) : 0;
        text = size >= 2 ? PyBytes_AS_STRING(texts) : NULL;
        if (text == NULL || text[0] != '[' || text[size - 1] != ']'
            || split_items(text + 1, size - 2, floats, spans) != floats) {
            PyErr_SetString(PyExc_ValueError, "outcome_messages: floats_json did not write a list of the floats");
            goto fail;
        }
        text++;
    }
    Py_ssize_t next_float = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *o = PyList_GET_ITEM(outcomes, i);
        out.size = 0;
        if (!out_put(&out, PyBytes_AS_STRING(prefix), PyBytes_GET_SIZE(prefix))) goto fail;
        for (Py_ssize_t j = 0; j < k; j++) {
            PyObject *v = *(PyObject **)((char *)o + offsets[j]);
            if (!out_put(&out, PyBytes_AS_STRING(keys[j]), PyBytes_GET_SIZE(keys[j]))) goto fail;
            int done; /* 1 written, 0 out of memory (raised), -1 a value for Python to write */
            if (PyFloat_CheckExact(v)) {
                Py_ssize_t from = spans[2 * next_float], to = spans[2 * next_float + 1];
                next_float++;
                done = out_put(&out, text + from, to - from);
            } else if (PyUnicode_CheckExact(v)) {
                done = out_text(&out, v);
            } else if (v == Py_None) {
                done = out_put(&out, "null", 4);
            } else if (v == Py_True || v == Py_False) {
                done = v == Py_True ? out_put(&out, "true", 4) : out_put(&out, "false", 5);
            } else if (PyLong_CheckExact(v)) {
                int overflow = 0;
                long long x = PyLong_AsLongLongAndOverflow(v, &overflow);
                if (overflow || (x == -1 && PyErr_Occurred())) {
                    PyErr_Clear();
                    done = -1; /* (beyond 64 bits: Python's to write) */
                } else {
                    done = out_int(&out, x);
                }
            } else {
                done = -1;
            }
            if (done < 0) goto other;
            if (done == 0) goto fail;
        }
        if (!out_put(&out, "}", 1)) goto fail;
        PyObject *message = PyBytes_FromStringAndSize(out.data, out.size);
        if (message == NULL) goto fail;
        PyList_SET_ITEM(messages, i, message);
    }
    Py_XDECREF(texts);
    PyMem_Free(spans);
    PyMem_Free(out.data);
    return messages;
other:
    Py_XDECREF(texts);
    PyMem_Free(spans);
    PyMem_Free(out.data);
    Py_DECREF(messages);
    Py_RETURN_NONE;
fail:
    Py_XDECREF(texts);
    PyMem_Free(spans);
    PyMem_Free(out.data);
    Py_XDECREF(messages);
    return NULL;
}

/* ---- payload_digests ---------------------------------------------------------------------- */

static uint32_t crc_table[8][256]; /* zlib's CRC-32 (reflected 0xEDB88320): slicing by 8 */

static void crc_table_init(void) {
    for (uint32_t i = 0; i < 256; i++) {
        uint32_t c = i;
        for (int k = 0; k < 8; k++) c = (c >> 1) ^ (0xEDB88320u & (0u - (c & 1u)));
        crc_table[0][i] = c;
    }
    for (int t = 1; t < 8; t++)
        for (int i = 0; i < 256; i++)
            crc_table[t][i] = (crc_table[t - 1][i] >> 8) ^ crc_table[0][crc_table[t - 1][i] & 0xFFu];
}

/* The register after `n` bytes from `s`, eight at a time (no inversions: the callers own them). */
static uint32_t crc_bytes(uint32_t s, const unsigned char *p, size_t n) {
    for (; n >= 8; p += 8, n -= 8) {
        uint32_t one = read_u32(p) ^ s, two = read_u32(p + 4);
        s = crc_table[7][one & 0xFFu] ^ crc_table[6][(one >> 8) & 0xFFu] ^ crc_table[5][(one >> 16) & 0xFFu]
            ^ crc_table[4][one >> 24] ^ crc_table[3][two & 0xFFu] ^ crc_table[2][(two >> 8) & 0xFFu]
            ^ crc_table[1][(two >> 16) & 0xFFu] ^ crc_table[0][two >> 24];
    }
    for (; n > 0; p++, n--) s = (s >> 8) ^ crc_table[0][(s ^ *p) & 0xFFu];
    return s;
}

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>
#define HAVE_FOLD 1
/* Folding: 16 message bytes read little-endian are a 128-bit polynomial A = H x^64 + L (H the low
 * quadword: its bits come first in the stream, bit i the coefficient of x^(127-i)). Carrying A over
 * the next 16 bytes B keeps the message's remainder mod P: A x^128 + B = H x^192 + L x^128 + B, with
 * x^192 = x * (x^191 mod P) and x^128 = x * (x^127 mod P), each constant bit-reversed into 64 bits
 * so that a carry-less product lands in the 128-bit block's order (its degree < 96 fits it). The
 * folded block has the prefix's remainder, so the table finishes it from a zero register. */
#define FOLD_HIGH 0x65673b4600000000ULL /* bitreverse64(x^191 mod P) */
#define FOLD_LOW 0x9ba54c6f00000000ULL  /* bitreverse64(x^127 mod P) */

__attribute__((target("pclmul,sse4.1")))
static uint32_t crc_fold(uint32_t s, const unsigned char *p, size_t n) {
    /* n >= 16: the register xored into the first four bytes, as a byte loop would take it in */
    __m128i x = _mm_xor_si128(_mm_loadu_si128((const __m128i *)p), _mm_cvtsi32_si128((int)s));
    const __m128i k = _mm_set_epi64x((long long)FOLD_LOW, (long long)FOLD_HIGH);
    size_t pos = 16;
    for (; n - pos >= 16; pos += 16) {
        __m128i high = _mm_clmulepi64_si128(x, k, 0x00), low = _mm_clmulepi64_si128(x, k, 0x11);
        x = _mm_xor_si128(_mm_xor_si128(high, low), _mm_loadu_si128((const __m128i *)(p + pos)));
    }
    unsigned char folded[16];
    _mm_storeu_si128((__m128i *)folded, x);
    return crc_bytes(crc_bytes(0, folded, 16), p + pos, n - pos);
}

static int have_fold;
#endif

static uint32_t crc32_of(const unsigned char *p, size_t n) {
#ifdef HAVE_FOLD
    if (have_fold && n >= 32) return ~crc_fold(0xFFFFFFFFu, p, n);
#endif
    return ~crc_bytes(0xFFFFFFFFu, p, n);
}

/* pending_tails(scores, labels, text_of, has_score): see the module's comment. `scores` and `labels`
 * are lists of one value an event; `text_of(label)` gives a label's class text as bytes (called once
 * a distinct label of each type: True and 1 apart, as Python's (type, label) keys keep them). */
static PyObject *pending_tails(PyObject *module, PyObject *const *args, Py_ssize_t nargs) {
    (void)module;
    if (!takes("pending_tails", nargs, 4)) return NULL;
    PyObject *scores = args[0], *labels = args[1], *text_of = args[2], *flag = args[3];
    if (!PyList_CheckExact(scores) || !PyList_CheckExact(labels)
        || PyList_GET_SIZE(scores) != PyList_GET_SIZE(labels))
        Py_RETURN_NONE;
    Py_ssize_t n = PyList_GET_SIZE(labels);
    for (Py_ssize_t e = 0; e < n; e++) {
        PyObject *label = PyList_GET_ITEM(labels, e);
        if (!PyFloat_CheckExact(PyList_GET_ITEM(scores, e))
            || !(PyUnicode_CheckExact(label) || PyLong_CheckExact(label) || PyBool_Check(label)))
            Py_RETURN_NONE;
    }
    /* a dict of texts a label type: str, int and bool (True == 1 would share one dict's key) */
    PyObject *texts[3] = {PyDict_New(), PyDict_New(), PyDict_New()};
    PyObject *tails = PyList_New(n);
    int ok = texts[0] != NULL && texts[1] != NULL && texts[2] != NULL && tails != NULL;
    for (Py_ssize_t e = 0; ok && e < n; e++) {
        PyObject *label = PyList_GET_ITEM(labels, e);
        PyObject *by_type = texts[PyUnicode_CheckExact(label) ? 0 : (PyBool_Check(label) ? 2 : 1)];
        PyObject *text = PyDict_GetItemWithError(by_type, label); /* borrowed */
        if (text == NULL) {
            if (PyErr_Occurred()) {
                ok = 0;
                break;
            }
            text = PyObject_CallOneArg(text_of, label);
            int stored = text != NULL && PyBytes_CheckExact(text) && PyBytes_GET_SIZE(text) < 0xFFFFFFFF
                         && PyDict_SetItem(by_type, label, text) == 0;
            Py_XDECREF(text); /* (the dict holds it) */
            if (!stored) {
                if (text != NULL && !PyErr_Occurred()) PyErr_SetString(PyExc_TypeError, "a label's text is not bytes");
                ok = 0;
                break;
            }
        }
        Py_ssize_t size = PyBytes_GET_SIZE(text);
        PyObject *tail = PyBytes_FromStringAndSize(NULL, 8 + size);
        PyObject *length = tail == NULL ? NULL : PyLong_FromSsize_t(size);
        if (tail == NULL || length == NULL) {
            Py_XDECREF(tail);
            ok = 0;
            break;
        }
        unsigned char *out = (unsigned char *)PyBytes_AS_STRING(tail);
        uint64_t bits;
        double score = PyFloat_AS_DOUBLE(PyList_GET_ITEM(scores, e));
        memcpy(&bits, &score, sizeof bits);
        for (int i = 0; i < 8; i++) out[i] = (unsigned char)(bits >> (8 * i)); /* <d, as _DOUBLE packs it */
        memcpy(out + 8, PyBytes_AS_STRING(text), (size_t)size);
        PyObject *item = PyTuple_Pack(3, flag, length, tail);
        Py_DECREF(length);
        Py_DECREF(tail);
        if (item == NULL) {
            ok = 0;
            break;
        }
        PyList_SET_ITEM(tails, e, item);
    }
    for (int t = 0; t < 3; t++) Py_XDECREF(texts[t]);
    if (ok) return tails;
    Py_XDECREF(tails);
    return NULL; /* (an error from text_of or memory: raised, as the Python path would raise it) */
}

/* One value of a row's other features as orjson writes it into `out` (room for 24 bytes beyond
 * *at, or the str's length + 2): its length, or -1 where this does not write it (the caller's
 * Python path), -2 where `out` must grow to `*need` first. */
static Py_ssize_t other_json(PyObject *v, char *out, Py_ssize_t room, Py_ssize_t *need) {
    if (v == Py_None) {
        if (room < 4) return *need = 4, -2;
        memcpy(out, "null", 4);
        return 4;
    }
    if (PyBool_Check(v)) {
        if (room < 5) return *need = 5, -2;
        if (v == Py_True) {
            memcpy(out, "true", 4);
            return 4;
        }
        memcpy(out, "false", 5);
        return 5;
    }
    if (PyLong_CheckExact(v)) {
        int overflow = 0;
        long long x = PyLong_AsLongLongAndOverflow(v, &overflow);
        if (overflow || (x == -1 && PyErr_Occurred())) return -1;
        if (room < 24) return *need = 24, -2;
        return snprintf(out, (size_t)room, "%lld", x);
    }
    if (PyUnicode_CheckExact(v)) {
        Py_ssize_t n;
        const char *text = PyUnicode_AsUTF8AndSize(v, &n); /* (a lone surrogate: NULL, orjson refuses it too) */
        if (text == NULL) return -1;
        if (room < n + 2) return *need = n + 2, -2;
        for (Py_ssize_t i = 0; i < n; i++) {
            unsigned char b = (unsigned char)text[i];
            if (b == '"' || b == '\\' || b < 0x20) return -1; /* orjson escapes it */
        }
        out[0] = '"';
        memcpy(out + 1, text, (size_t)n);
        out[n + 1] = '"';
        return n + 2;
    }
    return -1;
}

/* packed_rows(block, row_size, others, n): see the module's comment. `block`: a C-contiguous buffer
 * of n rows of `row_size` bytes (None with no float feature); `others`: a list of columns (lists of
 * n values), the other features in the layout's order. */
static PyObject *packed_rows(PyObject *module, PyObject *const *args, Py_ssize_t nargs) {
    (void)module;
    if (!takes("packed_rows", nargs, 4)) return NULL;
    Py_ssize_t row_size = PyLong_AsSsize_t(args[1]), n = PyLong_AsSsize_t(args[3]);
    if ((row_size == -1 || n == -1) && PyErr_Occurred()) return NULL;
    PyObject *others = args[2];
    if (!PyList_CheckExact(others) || row_size < 0 || n < 0) Py_RETURN_NONE;
    Py_ssize_t k = PyList_GET_SIZE(others);
    for (Py_ssize_t j = 0; j < k; j++) {
        PyObject *column = PyList_GET_ITEM(others, j);
        if (!PyList_CheckExact(column) || PyList_GET_SIZE(column) != n) Py_RETURN_NONE;
    }
    Py_buffer block = {0};
    if (args[0] != Py_None) {
        if (PyObject_GetBuffer(args[0], &block, PyBUF_C_CONTIGUOUS) < 0) {
            PyErr_Clear();
            Py_RETURN_NONE;
        }
        if (block.len != n * row_size) {
            PyBuffer_Release(&block);
            Py_RETURN_NONE;
        }
    } else if (row_size != 0) {
        Py_RETURN_NONE;
    }
    PyObject *rows = PyList_New(n);
    Py_ssize_t room = row_size + 256;
    char *scratch = rows == NULL ? NULL : PyMem_Malloc((size_t)room);
    int ok = scratch != NULL;
    if (rows != NULL && scratch == NULL) PyErr_NoMemory();
    for (Py_ssize_t e = 0; ok && e < n; e++) {
        Py_ssize_t at = row_size;
        if (row_size) memcpy(scratch, (const char *)block.buf + e * row_size, (size_t)row_size);
        if (k) scratch[at++] = '[';
        for (Py_ssize_t j = 0; ok && j < k; j++) {
            if (j) scratch[at++] = ',';
            for (;;) {
                Py_ssize_t need = 0;
                Py_ssize_t wrote = other_json(PyList_GET_ITEM(PyList_GET_ITEM(others, j), e), scratch + at,
                                              room - at - 1, &need);  /* (1 byte kept for the ']' or ',') */
                if (wrote >= 0) {
                    at += wrote;
                    break;
                }
                if (wrote == -1) {
                    ok = 0;
                    break;
                }
                Py_ssize_t grown = 2 * room + need;
                char *bigger = PyMem_Realloc(scratch, (size_t)grown);
                if (bigger == NULL) {
                    PyErr_NoMemory();
                    ok = 0;
                    break;
                }
                scratch = bigger;
                room = grown;
            }
        }
        if (!ok) break;
        if (k) scratch[at++] = ']';
        PyObject *row = PyBytes_FromStringAndSize(scratch, at);
        if (row == NULL) {
            ok = 0;
            break;
        }
        PyList_SET_ITEM(rows, e, row);
    }
    PyMem_Free(scratch);
    if (block.obj != NULL) PyBuffer_Release(&block);
    if (ok) return rows;
    Py_XDECREF(rows);
    if (PyErr_Occurred()) {
        if (!PyErr_ExceptionMatches(PyExc_MemoryError)) PyErr_Clear();
        else return NULL;
    }
    Py_RETURN_NONE;
}

static PyObject *payload_digests(PyObject *module, PyObject *payloads) {
    (void)module;
    if (!PyList_Check(payloads)) {
        PyErr_SetString(PyExc_TypeError, "payload_digests: a list of bytes");
        return NULL;
    }
    Py_ssize_t count = PyList_GET_SIZE(payloads);
    PyObject *out = PyList_New(count);
    if (out == NULL) return NULL;
    for (Py_ssize_t i = 0; i < count; i++) {
        Py_buffer view;
        if (PyObject_GetBuffer(PyList_GET_ITEM(payloads, i), &view, PyBUF_SIMPLE) < 0) goto fail;
        if ((size_t)view.len > UINT32_MAX) { /* as struct's ">II" refuses it */
            PyBuffer_Release(&view);
            PyErr_SetString(PyExc_OverflowError, "payload_digests: a payload of 4 GiB or more");
            goto fail;
        }
        uint32_t crc = crc32_of((const unsigned char *)view.buf, (size_t)view.len), size = (uint32_t)view.len;
        PyBuffer_Release(&view);
        unsigned char digest[DIGEST_SIZE] = {
            (unsigned char)(crc >> 24), (unsigned char)(crc >> 16), (unsigned char)(crc >> 8), (unsigned char)crc,
            (unsigned char)(size >> 24), (unsigned char)(size >> 16), (unsigned char)(size >> 8), (unsigned char)size,
        };
        PyObject *item = PyBytes_FromStringAndSize((const char *)digest, DIGEST_SIZE);
        if (item == NULL) goto fail;
        PyList_SET_ITEM(out, i, item);
    }
    return out;
fail:
    Py_DECREF(out);
    return NULL;
}

/* ---- id_keys ------------------------------------------------------------------------------ */

#define UUID_CODE 0xFFFF /* records.py's _UUID_CODE: 16 raw bytes follow */
#define UUID_TEXT 36

static int hex_value(Py_UCS1 c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    return -1; /* uppercase too: its key would not give the id's text back */
}

/* A canonical (lowercase) UUID's 16 bytes into `raw`; 0 for any other text. */
static int uuid_bytes(const Py_UCS1 *text, unsigned char *raw) {
    int at = 0;
    for (int i = 0; i < UUID_TEXT;) {
        if (i == 8 || i == 13 || i == 18 || i == 23) {
            if (text[i++] != '-') return 0;
            continue;
        }
        int high = hex_value(text[i]), low = hex_value(text[i + 1]);
        if (high < 0 || low < 0) return 0;
        raw[at++] = (unsigned char)(high << 4 | low);
        i += 2;
    }
    return 1;
}

static PyObject *id_keys(PyObject *module, PyObject *pids) {
    (void)module;
    if (!PyList_Check(pids)) Py_RETURN_NONE;
    Py_ssize_t count = PyList_GET_SIZE(pids);
    for (Py_ssize_t i = 0; i < count; i++) { /* ASCII ids only: the rest are records.py's alone */
        PyObject *pid = PyList_GET_ITEM(pids, i);
        if (!PyUnicode_CheckExact(pid) || !PyUnicode_IS_ASCII(pid) || PyUnicode_GET_LENGTH(pid) >= UUID_CODE)
            Py_RETURN_NONE;
    }
    PyObject *keys = PyList_New(count), *crcs = PyList_New(count);
    if (keys == NULL || crcs == NULL) goto fail;
    for (Py_ssize_t i = 0; i < count; i++) {
        PyObject *pid = PyList_GET_ITEM(pids, i);
        const Py_UCS1 *text = PyUnicode_1BYTE_DATA(pid);
        Py_ssize_t length = PyUnicode_GET_LENGTH(pid);
        unsigned char raw[18];
        PyObject *key;
        if (length == UUID_TEXT && uuid_bytes(text, raw + 2)) {
            raw[0] = raw[1] = 0xFF;
            key = PyBytes_FromStringAndSize((const char *)raw, 18);
        } else {
            key = PyBytes_FromStringAndSize(NULL, length + 2);
            if (key != NULL) {
                unsigned char *out = (unsigned char *)PyBytes_AS_STRING(key);
                out[0] = (unsigned char)(length & 0xFF); /* records.py's _CODE: "<H" */
                out[1] = (unsigned char)(length >> 8);
                memcpy(out + 2, text, (size_t)length);
            }
        }
        if (key == NULL) goto fail;
        PyList_SET_ITEM(keys, i, key);
        PyObject *crc = PyLong_FromUnsignedLong(
            crc32_of((const unsigned char *)PyBytes_AS_STRING(key), (size_t)PyBytes_GET_SIZE(key)));
        if (crc == NULL) goto fail;
        PyList_SET_ITEM(crcs, i, crc);
    }
    PyObject *out = PyTuple_Pack(2, keys, crcs);
    Py_DECREF(keys);
    Py_DECREF(crcs);
    return out;
fail:
    Py_XDECREF(keys);
    Py_XDECREF(crcs);
    return NULL;
}

/* ---- current_records ------------------------------------------------------------------------ */

/* One added record's (id key, event time), as the join tracks it (records.py's _keyed_time). */
typedef struct {
    const unsigned char *key;
    Py_ssize_t length; /* of the key */
    int64_t ts;
} Keyed;

/* Python's order of (key, ts) tuples: the keys as bytes compare (memcmp, then the shorter first),
 * then the times. */
static int keyed_order(const void *a, const void *b) {
    const Keyed *x = (const Keyed *)a, *y = (const Keyed *)b;
    int c = memcmp(x->key, y->key, (size_t)(x->length < y->length ? x->length : y->length));
    if (c != 0) return c;
    if (x->length != y->length) return x->length < y->length ? -1 : 1;
    return (x->ts > y->ts) - (x->ts < y->ts);
}

/* current_records(groups, low_mask, split, added): TrackedTable.current_records(added_keys()) for
 * an unspilled or spilled table alike (the caller reads spilled payloads back): the records added
 * since the last delta, `added` a set (or list) of keyed times, sorted as (key, time) tuples sort;
 * each one's current bytes, a slice of its group (found as RecordTable._locate finds it: its
 * group by the key's CRC-32 and the linear hashing's split, the first record of the key at that
 * time), and the (key, time) of each the table no longer holds. None where an item is not a
 * keyed time or a group not bytes (the caller's Python path). */
static PyObject *current_records(PyObject *module, PyObject *const *args, Py_ssize_t nargs) {
    (void)module;
    if (!takes("current_records", nargs, 4)) return NULL;
    PyObject *groups = args[0], *added = args[3];
    if (!PyList_CheckExact(groups) || !(PyAnySet_CheckExact(added) || PyList_CheckExact(added)))
        Py_RETURN_NONE;
    unsigned long long low_mask = PyLong_AsUnsignedLongLong(args[1]);
    if (low_mask == (unsigned long long)-1 && PyErr_Occurred()) return NULL;
    Py_ssize_t split = PyLong_AsSsize_t(args[2]);
    if (split == -1 && PyErr_Occurred()) return NULL;
    Py_ssize_t count = PySequence_Size(added), n_groups = PyList_GET_SIZE(groups);
    if (count < 0) return NULL;
    Keyed *items = PyMem_Malloc(sizeof(Keyed) * (size_t)(count > 0 ? count : 1));
    PyObject *iter = items == NULL ? NULL : PyObject_GetIter(added);
    PyObject *records = NULL, *gone = NULL, *item;
    if (iter == NULL) goto fail;
    Py_ssize_t taken = 0;
    while ((item = PyIter_Next(iter)) != NULL) {
        /* the set holds a reference to each item until the call returns: a borrowed view is safe */
        int fits = PyBytes_CheckExact(item) && PyBytes_GET_SIZE(item) >= 10 && taken < count;
        if (fits) {
            const unsigned char *raw = (const unsigned char *)PyBytes_AS_STRING(item);
            Py_ssize_t length = PyBytes_GET_SIZE(item) - 8;
            items[taken++] = (Keyed){raw, length, read_i64(raw + length)};
        }
        Py_DECREF(item);
        if (!fits) {
            Py_DECREF(iter);
            PyMem_Free(items);
            Py_RETURN_NONE;
        }
    }
    Py_CLEAR(iter);
    if (PyErr_Occurred()) goto fail;
    for (Py_ssize_t g = 0; g < n_groups; g++)
        if (!PyBytes_CheckExact(PyList_GET_ITEM(groups, g))) {
            PyMem_Free(items);
            Py_RETURN_NONE;
        }
    qsort(items, (size_t)taken, sizeof(Keyed), keyed_order);
    records = PyList_New(0);
    gone = PyList_New(0);
    if (records == NULL || gone == NULL) goto fail;
    for (Py_ssize_t i = 0; i < taken; i++) {
        const Keyed *k = &items[i];
        unsigned long long crc = crc32_of(k->key, (size_t)k->length), gid = crc & low_mask;
        if ((Py_ssize_t)gid < split) gid = crc & (2 * low_mask + 1);
        if ((Py_ssize_t)gid >= n_groups) {
            PyErr_SetString(PyExc_ValueError, "current_records: a key's group is beyond the table");
            goto fail;
        }
        PyObject *group = PyList_GET_ITEM(groups, (Py_ssize_t)gid);
        const unsigned char *data = (const unsigned char *)PyBytes_AS_STRING(group);
        Py_ssize_t size = PyBytes_GET_SIZE(group), pos = 0, found = -1, end = 0;
        while (pos + HEAD_SIZE <= size) {  /* _find's walk over the records' lengths */
            Py_ssize_t length = (Py_ssize_t)read_u32(data + pos);
            if (length < HEAD_SIZE || pos + length > size) {
                PyErr_SetString(PyExc_ValueError, "current_records: a record overruns its group");
                goto fail;
            }
            Py_ssize_t at = pos + HEAD_SIZE;
            if (at + k->length + 8 <= size && memcmp(data + at, k->key, (size_t)k->length) == 0
                && read_i64(data + at + k->length) == k->ts) {
                found = pos;
                end = pos + length;
                break;
            }
            pos += length;
        }
        PyObject *made;
        if (found >= 0) {
            made = PyBytes_FromStringAndSize((const char *)data + found, end - found);
        } else {
            PyObject *key = PyBytes_FromStringAndSize((const char *)k->key, k->length);
            made = key == NULL ? NULL : Py_BuildValue("(NL)", key, (long long)k->ts);
        }
        if (made == NULL || PyList_Append(found >= 0 ? records : gone, made) < 0) {
            Py_XDECREF(made);
            goto fail;
        }
        Py_DECREF(made);
    }
    PyMem_Free(items);
    return Py_BuildValue("(NN)", records, gone); /* "N": the tuple takes both lists */
fail:
    Py_XDECREF(iter);
    PyMem_Free(items);
    Py_XDECREF(records);
    Py_XDECREF(gone);
    return NULL;
}

static PyMethodDef methods[] = {
    {"payload_digests", (PyCFunction)payload_digests, METH_O,
     "records.py's payload_digest of each payload of a list (see the module's C source)."},
    {"id_keys", (PyCFunction)id_keys, METH_O,
     "The id keys of a list of ASCII ids and their CRC-32s, or None (see the module's C source)."},
    {"close_pending", (PyCFunction)(void (*)(void))close_pending, METH_FASTCALL,
     "Close the pending records of a batch's commonest labels (see the module's C source)."},
    {"outcome_rows", (PyCFunction)(void (*)(void))outcome_rows, METH_FASTCALL,
     "The outcomes of a batch's joined labels, read from their records (see the module's C source)."},
    {"rows_json", (PyCFunction)(void (*)(void))rows_json, METH_FASTCALL,
     "Each row's features' JSON object from the batch's value texts (see the module's C source)."},
    {"add_pending", (PyCFunction)(void (*)(void))add_pending, METH_FASTCALL,
     "Add a batch's commonest predictions as pending records (see the module's C source)."},
    {"pending_tails", (PyCFunction)(void (*)(void))pending_tails, METH_FASTCALL,
     "What each pending record keeps of a batch of scored class predictions (see the module's C source)."},
    {"slot_columns", (PyCFunction)(void (*)(void))slot_columns, METH_FASTCALL,
     "Each named slot's values of a list of objects of one class, or None (see the module's C source)."},
    {"outcome_messages", (PyCFunction)(void (*)(void))outcome_messages, METH_FASTCALL,
     "Each outcome's message, as orjson writes its row, or None (see the module's C source)."},
    {"packed_rows", (PyCFunction)(void (*)(void))packed_rows, METH_FASTCALL,
     "Each event's features encoded in a batch's one layout, or None (see the module's C source)."},
    {"current_records", (PyCFunction)(void (*)(void))current_records, METH_FASTCALL,
     "The records added since the last delta, sorted, and the keys of those gone (see the C source)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module_def = {
    PyModuleDef_HEAD_INIT, "_native",
    "The join's commonest label case in C; driftline.operators.join.core falls back to Python without it.",
    -1, methods, NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__native(void) {
    crc_table_init();
#ifdef HAVE_FOLD
    have_fold = __builtin_cpu_supports("pclmul") && __builtin_cpu_supports("sse4.1");
#endif
#ifdef HAVE_SHUFFLE
    have_shuffle = __builtin_cpu_supports("ssse3");
    quote_shuffles_init();
#endif
    append_name = PyUnicode_InternFromString("append");
    get_name = PyUnicode_InternFromString("get");
    typecode = PyUnicode_FromString("I");
    PyObject *arrays = PyImport_ImportModule("array");
    if (arrays != NULL) {
        array_type = PyObject_GetAttrString(arrays, "array");
        Py_DECREF(arrays);
    }
    if (append_name == NULL || get_name == NULL || typecode == NULL || array_type == NULL) return NULL;
    return PyModule_Create(&module_def);
}
