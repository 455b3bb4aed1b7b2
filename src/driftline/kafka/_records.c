/* A fetched partition's Kafka record batches (message format v2) straight to the worker's RawRecords.
 *
 * aiokafka reads a fetched partition batch by batch and record by record through Python generators,
 * a C DefaultRecord a record, then the record the consumer hands out. For the common fetch (v2
 * batches; compressed ones decompressed by the caller's function, aiokafka's codecs; transactions'
 * batches where the fetch aborted none) `parse` walks the bytes once and calls the RawRecord type
 * with each record's fields. Anything else, and anything it cannot read exactly as aiokafka would, returns None: the
 * caller leaves the fetch to aiokafka, which reads it (or raises its own error on a corrupt one).
 * driftline.kafka.records holds the contract.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

#define LOG_OVERHEAD 12      /* base offset (8) + batch length (4) */
#define V2_HEADER 61         /* bytes before a v2 batch's first record */
#define ATTR_CODEC 0x07
#define ATTR_LOG_APPEND_TIME 0x08
#define ATTR_TRANSACTIONAL 0x10
#define ATTR_CONTROL 0x20

/* -- CRC-32C (Castagnoli), the v2 batch checksum: slicing by 8, tables built once ---------------- */

static uint32_t crc_table[8][256];

static void crc_init(void) {
    for (uint32_t n = 0; n < 256; n++) {
        uint32_t c = n;
        for (int k = 0; k < 8; k++)
            c = (c & 1) ? (c >> 1) ^ 0x82F63B78u : c >> 1;
        crc_table[0][n] = c;
    }
    for (uint32_t n = 0; n < 256; n++)
        for (int t = 1; t < 8; t++)
            crc_table[t][n] = (crc_table[t - 1][n] >> 8) ^ crc_table[0][crc_table[t - 1][n] & 0xFF];
}

static uint32_t crc32c(const unsigned char *p, Py_ssize_t n) {
    uint32_t c = 0xFFFFFFFFu;
    while (n >= 8) {
        uint32_t lo = c ^ ((uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24);
        uint32_t hi = (uint32_t)p[4] | (uint32_t)p[5] << 8 | (uint32_t)p[6] << 16 | (uint32_t)p[7] << 24;
        c = crc_table[7][lo & 0xFF] ^ crc_table[6][(lo >> 8) & 0xFF] ^ crc_table[5][(lo >> 16) & 0xFF]
            ^ crc_table[4][lo >> 24] ^ crc_table[3][hi & 0xFF] ^ crc_table[2][(hi >> 8) & 0xFF]
            ^ crc_table[1][(hi >> 16) & 0xFF] ^ crc_table[0][hi >> 24];
        p += 8;
        n -= 8;
    }
    while (n-- > 0)
        c = crc_table[0][(c ^ *p++) & 0xFF] ^ (c >> 8);
    return c ^ 0xFFFFFFFFu;
}

/* -- big-endian fields and zigzag varints ------------------------------------------------------------ */

static int64_t be64(const unsigned char *p) {
    uint64_t v = 0;
    for (int i = 0; i < 8; i++)
        v = v << 8 | p[i];
    return (int64_t)v;
}

static int32_t be32(const unsigned char *p) {
    return (int32_t)((uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | (uint32_t)p[3]);
}

/* A zigzag varint of at most 10 bytes at *pos (< end); 0 and *pos moved past it, -1 if it runs out. */
static int varint(const unsigned char *buf, Py_ssize_t end, Py_ssize_t *pos, int64_t *out) {
    uint64_t v = 0;
    int shift = 0;
    Py_ssize_t p = *pos;
    for (;;) {
        if (p >= end || shift > 63)
            return -1;
        unsigned char b = buf[p++];
        v |= (uint64_t)(b & 0x7F) << shift;
        if (!(b & 0x80))
            break;
        shift += 7;
    }
    *pos = p;
    *out = (int64_t)(v >> 1) ^ -(int64_t)(v & 1);
    return 0;
}

/* A nullable byte string of varint length at *pos: a new bytes object, Py_None (a new reference) for
 * length -1, or NULL with *bad set when the length does not fit (no Python error then). */
static PyObject *nullable_bytes(const unsigned char *buf, Py_ssize_t end, Py_ssize_t *pos, int *bad) {
    int64_t n;
    if (varint(buf, end, pos, &n) < 0 || n < -1 || n > end - *pos) {
        *bad = 1;
        return NULL;
    }
    if (n == -1)
        Py_RETURN_NONE;
    PyObject *b = PyBytes_FromStringAndSize((const char *)buf + *pos, (Py_ssize_t)n);
    *pos += (Py_ssize_t)n;
    return b;
}

/* Skips a record's headers (count, then key and nullable value of each); -1 if malformed, or if a
 * key is not UTF-8 (aiokafka decodes the keys and raises; no Python error is left set here). */
static int skip_headers(const unsigned char *buf, Py_ssize_t end, Py_ssize_t *pos) {
    int64_t count, n;
    if (varint(buf, end, pos, &count) < 0 || count < 0)
        return -1;
    for (int64_t h = 0; h < count; h++) {
        if (varint(buf, end, pos, &n) < 0 || n < 0 || n > end - *pos)
            return -1;
        PyObject *key = PyUnicode_DecodeUTF8((const char *)buf + *pos, (Py_ssize_t)n, "strict");
        if (key == NULL) {
            PyErr_Clear();
            return -1;
        }
        Py_DECREF(key);
        *pos += (Py_ssize_t)n;
        if (varint(buf, end, pos, &n) < 0 || n < -1 || n > end - *pos)
            return -1;
        if (n > 0)
            *pos += (Py_ssize_t)n;
    }
    return 0;
}

/* -- parse ----------------------------------------------------------------------------------------- */

/* The records of one v2 batch, recs[0:size) (decompressed where the batch was), appended to `out`
 * from *next_offset on: 1 if every record read as aiokafka reads it and nothing follows the last,
 * 0 if not (the caller gives the whole fetch back), -1 on a Python error. */
static int parse_records(const unsigned char *recs, Py_ssize_t size, int32_t count, int64_t base_offset,
                         int64_t first_timestamp, const int64_t *log_append_time, PyObject *record_type,
                         PyObject *topic, PyObject *partition, int64_t *next_offset, PyObject *out) {
    Py_ssize_t pos = 0;
    for (int32_t i = 0; i < count; i++) {
        int64_t length, attr, ts_delta, offset_delta;
        if (varint(recs, size, &pos, &length) < 0 || length < 0 || length > size - pos)
            return 0;
        Py_ssize_t start = pos, end = pos + (Py_ssize_t)length;
        if (varint(recs, end, &pos, &attr) < 0 || varint(recs, end, &pos, &ts_delta) < 0
            || varint(recs, end, &pos, &offset_delta) < 0)
            return 0;
        int bad = 0;
        PyObject *key = nullable_bytes(recs, end, &pos, &bad);
        if (key == NULL)
            return bad ? 0 : -1;
        PyObject *value = nullable_bytes(recs, end, &pos, &bad);
        if (value == NULL) {
            Py_DECREF(key);
            return bad ? 0 : -1;
        }
        if (skip_headers(recs, end, &pos) < 0 || pos != start + (Py_ssize_t)length) {
            Py_DECREF(key);
            Py_DECREF(value);
            return 0;
        }
        int64_t offset = base_offset + offset_delta;
        if (offset < *next_offset) {  /* below the fetch offset: aiokafka skips it as well */
            Py_DECREF(key);
            Py_DECREF(value);
            continue;
        }
        int64_t timestamp = log_append_time != NULL ? *log_append_time : first_timestamp + ts_delta;
        PyObject *py_offset = PyLong_FromLongLong(offset);
        PyObject *py_timestamp = py_offset ? PyLong_FromLongLong(timestamp) : NULL;
        PyObject *record = NULL;
        if (py_timestamp != NULL) {
            PyObject *args[6] = {topic, partition, py_offset, py_timestamp, key, value};
            record = PyObject_Vectorcall(record_type, args, 6, NULL);
        }
        Py_XDECREF(py_offset);
        Py_XDECREF(py_timestamp);
        Py_DECREF(key);
        Py_DECREF(value);
        if (record == NULL)
            return -1;
        int appended = PyList_Append(out, record);
        Py_DECREF(record);
        if (appended < 0)
            return -1;
        *next_offset = offset + 1;
    }
    return pos == size;  /* bytes past the last record: aiokafka calls the batch corrupt */
}

/* 1: the batch at buf[0:size) is a v2 batch whose records were appended (none for a control batch,
 * which aiokafka skips); 0: not, or not read as aiokafka reads it (the caller gives the whole fetch
 * back); -1: a Python error. Transactional and control batches only where `transactions` is set (no
 * aborted transaction in the fetch, or reading uncommitted: aiokafka then skips no record of a
 * transaction). A compressed batch's records are decompressed by calling
 * decompress(codec, payload) -> bytes | None (None: give the fetch back; Py_None: no such callable). */
static int parse_batch(const unsigned char *buf, Py_ssize_t size, int check_crcs, int transactions,
                       PyObject *decompress, PyObject *record_type, PyObject *topic, PyObject *partition,
                       int64_t *next_offset, PyObject *out) {
    if (size < V2_HEADER || buf[16] != 2)
        return 0;
    int attributes = (int)((unsigned)buf[21] << 8 | buf[22]);
    if ((attributes & (ATTR_TRANSACTIONAL | ATTR_CONTROL)) && !transactions)
        return 0;
    if (check_crcs && (uint32_t)be32(buf + 17) != crc32c(buf + 21, size - 21))
        return 0;  /* aiokafka raises CorruptRecordException for it */
    int64_t base_offset = be64(buf);
    int64_t last_offset_delta = be32(buf + 23);
    if (attributes & ATTR_CONTROL) {  /* a transaction's marker: no record of it is handed out */
        *next_offset = base_offset + last_offset_delta + 1;
        return 1;
    }
    int64_t first_timestamp = be64(buf + 27), max_timestamp = be64(buf + 35);
    int32_t count = be32(buf + 57);
    if (count < 0)
        return 0;
    /* LogAppendTime: every record has the broker's time, the batch's max timestamp */
    const int64_t *log_append_time = (attributes & ATTR_LOG_APPEND_TIME) ? &max_timestamp : NULL;
    int done;
    int codec = attributes & ATTR_CODEC;
    if (codec == 0) {
        done = parse_records(buf + V2_HEADER, size - V2_HEADER, count, base_offset, first_timestamp,
                             log_append_time, record_type, topic, partition, next_offset, out);
    } else {
        if (decompress == Py_None)
            return 0;
        PyObject *payload = PyBytes_FromStringAndSize((const char *)buf + V2_HEADER, size - V2_HEADER);
        if (payload == NULL)
            return -1;
        PyObject *records = PyObject_CallFunction(decompress, "iO", codec, payload);
        Py_DECREF(payload);
        if (records == NULL)
            return -1;
        if (!PyBytes_Check(records)) {  /* None: no codec, or the payload did not decompress */
            Py_DECREF(records);
            return 0;
        }
        done = parse_records((const unsigned char *)PyBytes_AS_STRING(records), PyBytes_GET_SIZE(records), count,
                             base_offset, first_timestamp, log_append_time, record_type, topic, partition,
                             next_offset, out);
        Py_DECREF(records);
    }
    if (done == 1)
        *next_offset = base_offset + last_offset_delta + 1;
    return done;
}

static PyObject *parse(PyObject *self, PyObject *args) {
    (void)self;
    Py_buffer view;
    long long fetch_offset;
    PyObject *topic, *partition, *record_type, *decompress = Py_None;
    int check_crcs, transactions = 0;
    if (!PyArg_ParseTuple(args, "y*LUOOp|Op:parse", &view, &fetch_offset, &topic, &partition, &record_type,
                          &check_crcs, &decompress, &transactions))
        return NULL;
    const unsigned char *buf = view.buf;
    Py_ssize_t size = view.len, pos = 0;
    int64_t next_offset = fetch_offset;
    PyObject *out = PyList_New(0);
    if (out == NULL) {
        PyBuffer_Release(&view);
        return NULL;
    }
    /* batches as aiokafka's MemoryRecords cuts them: a partial batch at the end is left unread */
    while (size - pos >= LOG_OVERHEAD) {
        int32_t length = be32(buf + pos + 8);
        if (length < 0 || (Py_ssize_t)length > size - pos - LOG_OVERHEAD)
            break;
        Py_ssize_t batch_size = LOG_OVERHEAD + (Py_ssize_t)length;
        int done = parse_batch(buf + pos, batch_size, check_crcs, transactions, decompress, record_type, topic,
                               partition, &next_offset, out);
        if (done <= 0) {
            Py_DECREF(out);
            PyBuffer_Release(&view);
            if (done == 0)
                Py_RETURN_NONE;
            return NULL;
        }
        pos += batch_size;
    }
    PyBuffer_Release(&view);
    PyObject *result = Py_BuildValue("(NL)", out, (long long)next_offset);
    return result;
}

static PyMethodDef methods[] = {
    {"parse", parse, METH_VARARGS,
     "parse(data, fetch_offset, topic, partition, record_type, check_crcs, decompress=None, "
     "transactions=False) -> (records, next_fetch_offset) | None\n\nA fetched partition's v2 record "
     "batches as record_type(topic, partition, offset, timestamp_ms, key, value) objects from fetch_offset "
     "on, and the offset to fetch next; a compressed batch's records through decompress(codec, payload) -> "
     "bytes | None; control batches skipped. None where a batch is transactional or a control batch and "
     "transactions is false (aborted transactions in the fetch), of another format, fails its CRC, does not "
     "decompress or does not read exactly as aiokafka reads it."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_records", NULL, -1, methods, NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__records(void) {
    crc_init();
    return PyModule_Create(&module);
}
