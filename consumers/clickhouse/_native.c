/* consumers.clickhouse._native: records straight to one ClickHouse Native block, in C.
 *
 * encode(records: list, columns: tuple) -> bytes
 *
 * The bytes are one block of ClickHouse's Native format (as sent over HTTP or read by
 * INSERT ... FORMAT Native: no block info): varuint column count, varuint row count, then
 * per column its name, its type name and its data. `columns` is a tuple of plans, one per
 * column, each a tuple
 *
 *     (name: bytes, type: bytes, src: int, attr: str | None, sub: str | None,
 *      values: list | None, code: int, flags: int, ipcache: dict | None, ipmiss: callable)
 *
 * src says where a row's value comes from: SRC_ATTR getattr(record, attr); SRC_OBS the list
 * getattr(record, attr) whose items give getattr(item, sub) (an Array column); SRC_LIST
 * values[row]. code is the element encoding (CODE_*), flags add Nullable (None -> null),
 * Array (a sequence per row), NONE_EMPTY (None -> "" or []) and NOT_NONE (the value is
 * `value is not None`, as a Bool). `type` must be the Native type these bytes are: the
 * caller (`consumers.clickhouse.native`) derives code and flags from the table's described
 * types and sends LowCardinality(String) and Enum8 as String and IPv6 as FixedString(16);
 * ClickHouse converts them on insert.
 *
 * Values are checked, never wrapped or truncated: an int out of its column's range, a value
 * of the wrong type (a str where a list is expected too) or None where no null is allowed
 * raises ValueError/TypeError naming the column and the row. Text is UTF-8; text that is not valid Unicode (header values decoded
 * with surrogateescape) gives back its original bytes through surrogateescape.
 * IPv6 values are str looked up in `ipcache` (text -> 16 bytes), else ipmiss(text) gives
 * the 16 bytes (and caches them); 16-byte bytes values pass as they are.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>
#include <stdint.h>
#include <string.h>

enum { SRC_ATTR = 0, SRC_OBS = 1, SRC_LIST = 2 };
enum {
    CODE_STR = 0, CODE_BOOL = 1, CODE_U8 = 2, CODE_U16 = 3, CODE_U32 = 4, CODE_U64 = 5,
    CODE_I8 = 6, CODE_I16 = 7, CODE_I32 = 8, CODE_I64 = 9, CODE_F32 = 10, CODE_F64 = 11,
    CODE_IP = 12, CODE_MAP = 13
};
enum { F_NULLABLE = 1, F_ARRAY = 2, F_NONE_EMPTY = 4, F_NOT_NONE = 8 };

typedef struct {
    char *p;
    size_t len, cap;
} Buf;

static int buf_reserve(Buf *b, size_t extra) {
    if (b->len + extra <= b->cap) return 0;
    size_t cap = b->cap ? b->cap : 4096;
    while (cap < b->len + extra) cap *= 2;
    char *p = PyMem_Realloc(b->p, cap);
    if (p == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    b->p = p;
    b->cap = cap;
    return 0;
}

static inline int buf_put(Buf *b, const void *src, size_t n) {
    if (buf_reserve(b, n) < 0) return -1;
    memcpy(b->p + b->len, src, n);
    b->len += n;
    return 0;
}

static inline int buf_varuint(Buf *b, uint64_t v) {
    if (buf_reserve(b, 10) < 0) return -1;
    unsigned char *q = (unsigned char *)b->p + b->len;
    size_t n = 0;
    while (v >= 0x80) {
        q[n++] = (unsigned char)(v | 0x80);
        v >>= 7;
    }
    q[n++] = (unsigned char)v;
    b->len += n;
    return 0;
}

static inline int buf_string(Buf *b, const char *s, Py_ssize_t n) {
    if (buf_varuint(b, (uint64_t)n) < 0) return -1;
    return buf_put(b, s, (size_t)n);
}

/* One column being built: its plan and its buffers (data; for Nullable the null map, for
 * Array the end offsets, for Map the values in data2). */
typedef struct {
    PyObject *name, *type, *attr, *sub, *values, *ipcache, *ipmiss;
    int src, code, flags;
    Buf data, data2, nulls, offsets;
    uint64_t elements;
    /* a slot of a __slots__ class read directly (its member descriptor's offset) */
    PyTypeObject *slot_type;
    Py_ssize_t slot_offset;
    PyTypeObject *sub_type;
    Py_ssize_t sub_offset;
} Col;

/* The offset of `name` when it is an object slot of `type`, else -1. */
static Py_ssize_t slot_offset(PyTypeObject *type, PyObject *name) {
    PyObject *descr = _PyType_Lookup(type, name);
    if (descr == NULL || Py_TYPE(descr) != &PyMemberDescr_Type) return -1;
    PyMemberDef *m = ((PyMemberDescrObject *)descr)->d_member;
    if (m->type != T_OBJECT_EX && m->type != T_OBJECT) return -1;
    return m->offset;
}

/* A new reference to obj.name, through the slot offset when obj's type is the cached one. */
static inline PyObject *get_attr(PyObject *obj, PyObject *name, PyTypeObject **type,
                                 Py_ssize_t *offset) {
    if (Py_TYPE(obj) != *type) {
        *type = Py_TYPE(obj);
        *offset = slot_offset(*type, name);
    }
    if (*offset >= 0) {
        PyObject *v = *(PyObject **)((char *)obj + *offset);
        if (v != NULL) {
            Py_INCREF(v);
            return v;
        }
    }
    return PyObject_GetAttr(obj, name);
}

static int fail(Col *c, Py_ssize_t row, PyObject *exc, const char *what, PyObject *value) {
    if (PyErr_Occurred()) {
        PyObject *type, *val, *tb;
        PyErr_Fetch(&type, &val, &tb);
        PyErr_NormalizeException(&type, &val, &tb);
        PyErr_Format(PyExc_TypeError == type ? PyExc_TypeError : PyExc_ValueError,
                     "column %s row %zd: %s %R (%S)", PyBytes_AS_STRING(c->name), row, what,
                     value ? value : Py_None, val ? val : Py_None);
        Py_XDECREF(type);
        Py_XDECREF(val);
        Py_XDECREF(tb);
    } else {
        PyErr_Format(exc, "column %s row %zd: %s %R", PyBytes_AS_STRING(c->name), row, what,
                     value ? value : Py_None);
    }
    return -1;
}

static int put_text(Buf *b, Col *c, Py_ssize_t row, PyObject *v) {
    if (PyUnicode_Check(v)) {
        Py_ssize_t n;
        const char *s = PyUnicode_AsUTF8AndSize(v, &n);
        if (s != NULL) return buf_string(b, s, n);
        if (!PyErr_ExceptionMatches(PyExc_UnicodeEncodeError)) return -1;
        PyErr_Clear();
        PyObject *enc = PyUnicode_AsEncodedString(v, "utf-8", "surrogateescape");
        if (enc == NULL) {
            PyErr_Clear();
            enc = PyUnicode_AsEncodedString(v, "utf-8", "surrogatepass");
            if (enc == NULL) return fail(c, row, PyExc_ValueError, "cannot encode", v);
        }
        int r = buf_string(b, PyBytes_AS_STRING(enc), PyBytes_GET_SIZE(enc));
        Py_DECREF(enc);
        return r;
    }
    if (PyBytes_Check(v)) return buf_string(b, PyBytes_AS_STRING(v), PyBytes_GET_SIZE(v));
    if (PyByteArray_Check(v))
        return buf_string(b, PyByteArray_AS_STRING(v), PyByteArray_GET_SIZE(v));
    return fail(c, row, PyExc_TypeError, "expected str or bytes, got", v);
}

static int put_ip(Col *c, Py_ssize_t row, PyObject *v) {
    if (PyBytes_Check(v) && PyBytes_GET_SIZE(v) == 16)
        return buf_put(&c->data, PyBytes_AS_STRING(v), 16);
    if (!PyUnicode_Check(v)) return fail(c, row, PyExc_TypeError, "expected an address, got", v);
    PyObject *packed = PyDict_GetItemWithError(c->ipcache, v); /* borrowed */
    if (packed != NULL) Py_INCREF(packed);
    else if (PyErr_Occurred()) return -1;
    else if ((packed = PyObject_CallOneArg(c->ipmiss, v)) == NULL) return -1;
    if (!PyBytes_Check(packed) || PyBytes_GET_SIZE(packed) != 16) {
        fail(c, row, PyExc_ValueError, "address did not pack to 16 bytes:", v);
        Py_DECREF(packed);
        return -1;
    }
    int r = buf_put(&c->data, PyBytes_AS_STRING(packed), 16);
    Py_DECREF(packed);
    return r;
}

static int put_int(Buf *b, Col *c, Py_ssize_t row, PyObject *v) {
    if (!PyLong_Check(v)) return fail(c, row, PyExc_TypeError, "expected int, got", v);
    if (c->code == CODE_U64) {
        unsigned long long u = PyLong_AsUnsignedLongLong(v);
        if (u == (unsigned long long)-1 && PyErr_Occurred())
            return fail(c, row, PyExc_ValueError, "out of range:", v);
        return buf_put(b, &u, 8);
    }
    int overflow = 0;
    long long x = PyLong_AsLongLongAndOverflow(v, &overflow);
    if (x == -1 && PyErr_Occurred()) return -1;
    long long lo, hi;
    int size;
    switch (c->code) {
    case CODE_U8: lo = 0; hi = UINT8_MAX; size = 1; break;
    case CODE_U16: lo = 0; hi = UINT16_MAX; size = 2; break;
    case CODE_U32: lo = 0; hi = UINT32_MAX; size = 4; break;
    case CODE_I8: lo = INT8_MIN; hi = INT8_MAX; size = 1; break;
    case CODE_I16: lo = INT16_MIN; hi = INT16_MAX; size = 2; break;
    case CODE_I32: lo = INT32_MIN; hi = INT32_MAX; size = 4; break;
    default: lo = INT64_MIN; hi = INT64_MAX; size = 8; break;
    }
    if (overflow || x < lo || x > hi) return fail(c, row, PyExc_ValueError, "out of range:", v);
    /* little-endian machines only (checked at import) */
    return buf_put(b, &x, (size_t)size);
}

/* One element (not null, not an array) into the column's data. */
static int put_value(Col *c, Py_ssize_t row, PyObject *v) {
    switch (c->code) {
    case CODE_STR:
        if (v == Py_None && (c->flags & F_NONE_EMPTY)) return buf_varuint(&c->data, 0);
        return put_text(&c->data, c, row, v);
    case CODE_BOOL: {
        int t = v == Py_True ? 1 : v == Py_False ? 0 : PyObject_IsTrue(v);
        if (t < 0) return -1;
        char byte = (char)t;
        return buf_put(&c->data, &byte, 1);
    }
    case CODE_F32: {
        double d = PyFloat_AsDouble(v);
        if (d == -1.0 && PyErr_Occurred()) return fail(c, row, PyExc_TypeError, "expected a number, got", v);
        float f = (float)d;
        return buf_put(&c->data, &f, 4);
    }
    case CODE_F64: {
        double d = PyFloat_AsDouble(v);
        if (d == -1.0 && PyErr_Occurred()) return fail(c, row, PyExc_TypeError, "expected a number, got", v);
        return buf_put(&c->data, &d, 8);
    }
    case CODE_IP:
        return put_ip(c, row, v);
    case CODE_MAP: {
        if (!PyDict_Check(v)) return fail(c, row, PyExc_TypeError, "expected a dict, got", v);
        PyObject *k, *val;
        Py_ssize_t pos = 0;
        while (PyDict_Next(v, &pos, &k, &val)) {
            if (put_text(&c->data, c, row, k) < 0 || put_text(&c->data2, c, row, val) < 0)
                return -1;
        }
        c->elements += (uint64_t)PyDict_GET_SIZE(v);
        return buf_put(&c->offsets, &c->elements, 8);
    }
    default:
        return put_int(&c->data, c, row, v);
    }
}

/* The zero value written under a null. */
static int put_default(Col *c) {
    static const char zeros[16] = {0};
    switch (c->code) {
    case CODE_STR: return buf_varuint(&c->data, 0);
    case CODE_BOOL: case CODE_U8: case CODE_I8: return buf_put(&c->data, zeros, 1);
    case CODE_U16: case CODE_I16: return buf_put(&c->data, zeros, 2);
    case CODE_U32: case CODE_I32: case CODE_F32: return buf_put(&c->data, zeros, 4);
    case CODE_IP: return buf_put(&c->data, zeros, 16);
    case CODE_MAP: return buf_put(&c->offsets, &c->elements, 8);
    default: return buf_put(&c->data, zeros, 8);
    }
}

static int put_row(Col *c, Py_ssize_t row, PyObject *v) {
    if (c->flags & F_NOT_NONE) {
        char byte = v != Py_None;
        return buf_put(&c->data, &byte, 1);
    }
    if (c->flags & F_ARRAY) {
        if (v == Py_None && (c->flags & F_NONE_EMPTY)) return buf_put(&c->offsets, &c->elements, 8);
        PyObject *seq = PyUnicode_Check(v) || PyBytes_Check(v) ? NULL : PySequence_Fast(v, "");
        if (seq == NULL) {
            PyErr_Clear();
            return fail(c, row, PyExc_TypeError, "expected a list, got", v);
        }
        Py_ssize_t n = PySequence_Fast_GET_SIZE(seq);
        PyObject **items = PySequence_Fast_ITEMS(seq);
        for (Py_ssize_t j = 0; j < n; j++) {
            PyObject *item = items[j];
            int r;
            if (c->src == SRC_OBS) {
                PyObject *x = get_attr(item, c->sub, &c->sub_type, &c->sub_offset);
                if (x == NULL) {
                    Py_DECREF(seq);
                    return -1;
                }
                r = put_value(c, row, x);
                Py_DECREF(x);
            } else {
                r = put_value(c, row, item);
            }
            if (r < 0) {
                Py_DECREF(seq);
                return -1;
            }
        }
        Py_DECREF(seq);
        c->elements += (uint64_t)n;
        return buf_put(&c->offsets, &c->elements, 8);
    }
    if (c->flags & F_NULLABLE) {
        char isnull = v == Py_None;
        if (buf_put(&c->nulls, &isnull, 1) < 0) return -1;
        if (isnull) return put_default(c);
    } else if (v == Py_None && !(c->flags & F_NONE_EMPTY && c->code == CODE_STR)) {
        return fail(c, row, PyExc_ValueError, "None in a column that is not Nullable:", v);
    }
    return put_value(c, row, v);
}

#define SCRATCH_COLUMNS 256
#define SCRATCH_MAX ((size_t)256 << 20) /* buffers kept between calls, at most */
static Col scratch[SCRATCH_COLUMNS];
static const Py_ssize_t scratch_n = SCRATCH_COLUMNS;
static int scratch_busy;

static void col_free(Col *c) {
    PyMem_Free(c->data.p);
    PyMem_Free(c->data2.p);
    PyMem_Free(c->nulls.p);
    PyMem_Free(c->offsets.p);
}

static PyObject *encode(PyObject *self, PyObject *args) {
    PyObject *records, *plans;
    if (!PyArg_ParseTuple(args, "O!O!", &PyList_Type, &records, &PyTuple_Type, &plans))
        return NULL;
    Py_ssize_t ncols = PyTuple_GET_SIZE(plans), nrows = PyList_GET_SIZE(records);
    /* The column buffers of the last call are kept and reused: fresh memory for every
     * block (tens of MB) cost more in page faults and regrowth than the encoding itself.
     * A nested call (an address callback running Python that encodes) gets its own. */
    Col *cols;
    int own = scratch_busy || ncols > scratch_n;
    if (own) {
        cols = PyMem_Calloc((size_t)(ncols ? ncols : 1), sizeof(Col));
        if (cols == NULL) return PyErr_NoMemory();
    } else {
        cols = scratch;
        scratch_busy = 1;
        for (Py_ssize_t k = 0; k < ncols; k++) {
            Col *c = &cols[k];
            Buf d = c->data, d2 = c->data2, nl = c->nulls, of = c->offsets;
            memset(c, 0, sizeof *c);
            c->data = d, c->data2 = d2, c->nulls = nl, c->offsets = of;
            c->data.len = c->data2.len = c->nulls.len = c->offsets.len = 0;
        }
    }
    PyObject *result = NULL;

    for (Py_ssize_t k = 0; k < ncols; k++) {
        Col *c = &cols[k];
        PyObject *plan = PyTuple_GET_ITEM(plans, k);
        if (!PyTuple_Check(plan) ||
            !PyArg_ParseTuple(plan, "SSiOOOiiOO", &c->name, &c->type, &c->src, &c->attr,
                              &c->sub, &c->values, &c->code, &c->flags, &c->ipcache,
                              &c->ipmiss)) {
            if (!PyErr_Occurred()) PyErr_SetString(PyExc_TypeError, "a column plan is a tuple");
            goto done;
        }
        if (c->src == SRC_LIST && (!PyList_Check(c->values) || PyList_GET_SIZE(c->values) != nrows)) {
            PyErr_Format(PyExc_ValueError, "column %S: values must be a list of %zd", c->name, nrows);
            goto done;
        }
        if ((c->src == SRC_ATTR || c->src == SRC_OBS) && !PyUnicode_Check(c->attr)) {
            PyErr_Format(PyExc_TypeError, "column %S: attr must be str", c->name);
            goto done;
        }
        if (c->src == SRC_OBS && (!PyUnicode_Check(c->sub) || !(c->flags & F_ARRAY))) {
            PyErr_Format(PyExc_TypeError, "column %S: an observation column is an Array with sub", c->name);
            goto done;
        }
        if (c->code == CODE_IP && (!PyDict_Check(c->ipcache) || !PyCallable_Check(c->ipmiss))) {
            PyErr_Format(PyExc_TypeError, "column %S: IPv6 needs a cache dict and a callable", c->name);
            goto done;
        }
        if (c->code < CODE_STR || c->code > CODE_MAP || c->src < SRC_ATTR || c->src > SRC_LIST) {
            PyErr_Format(PyExc_ValueError, "column %S: bad code or source", c->name);
            goto done;
        }
    }

    for (Py_ssize_t i = 0; i < nrows; i++) {
        PyObject *rec = PyList_GET_ITEM(records, i);
        for (Py_ssize_t k = 0; k < ncols; k++) {
            Col *c = &cols[k];
            PyObject *v;
            if (c->src == SRC_LIST) {
                v = PyList_GET_ITEM(c->values, i);
                Py_INCREF(v);
            } else {
                v = get_attr(rec, c->attr, &c->slot_type, &c->slot_offset);
                if (v == NULL) goto done;
            }
            int r = put_row(c, i, v);
            Py_DECREF(v);
            if (r < 0) goto done;
        }
    }

    /* one exact allocation for the block, then one copy of every buffer */
    size_t total = 20;
    for (Py_ssize_t k = 0; k < ncols; k++) {
        Col *c = &cols[k];
        total += 20 + (size_t)PyBytes_GET_SIZE(c->name) + (size_t)PyBytes_GET_SIZE(c->type) +
                 c->nulls.len + c->offsets.len + c->data.len + c->data2.len;
    }
    PyObject *bytes = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)total);
    if (bytes == NULL) goto done;
    Buf out = {PyBytes_AS_STRING(bytes), 0, total}; /* never grows: total is an upper bound */
    buf_varuint(&out, (uint64_t)ncols);
    buf_varuint(&out, (uint64_t)nrows);
    for (Py_ssize_t k = 0; k < ncols; k++) {
        Col *c = &cols[k];
        buf_string(&out, PyBytes_AS_STRING(c->name), PyBytes_GET_SIZE(c->name));
        buf_string(&out, PyBytes_AS_STRING(c->type), PyBytes_GET_SIZE(c->type));
        buf_put(&out, c->nulls.p, c->nulls.len);
        buf_put(&out, c->offsets.p, c->offsets.len);
        buf_put(&out, c->data.p, c->data.len);
        buf_put(&out, c->data2.p, c->data2.len);
    }
    result = bytes;
    if (_PyBytes_Resize(&result, (Py_ssize_t)out.len) < 0) result = NULL;

done:
    if (own) {
        for (Py_ssize_t k = 0; k < ncols; k++) col_free(&cols[k]);
        PyMem_Free(cols);
    } else {
        size_t kept = 0;
        for (Py_ssize_t k = 0; k < ncols; k++)
            kept += cols[k].data.cap + cols[k].data2.cap + cols[k].nulls.cap + cols[k].offsets.cap;
        if (kept > SCRATCH_MAX)
            for (Py_ssize_t k = 0; k < scratch_n; k++) {
                col_free(&cols[k]);
                memset(&cols[k], 0, sizeof cols[k]);
            }
        scratch_busy = 0;
    }
    return result;
}

static PyMethodDef methods[] = {
    {"encode", encode, METH_VARARGS, "encode(records, columns) -> one Native block (bytes)"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "consumers.clickhouse._native",
    "Records to one ClickHouse Native block", -1, methods,
};

PyMODINIT_FUNC PyInit__native(void) {
    const uint16_t one = 1;
    if (*(const char *)&one != 1) {
        PyErr_SetString(PyExc_ImportError, "consumers.clickhouse._native needs a little-endian CPU");
        return NULL;
    }
    PyObject *m = PyModule_Create(&module);
    if (m == NULL) return NULL;
    static const struct { const char *name; int value; } consts[] = {
        {"SRC_ATTR", SRC_ATTR}, {"SRC_OBS", SRC_OBS}, {"SRC_LIST", SRC_LIST},
        {"CODE_STR", CODE_STR}, {"CODE_BOOL", CODE_BOOL}, {"CODE_U8", CODE_U8},
        {"CODE_U16", CODE_U16}, {"CODE_U32", CODE_U32}, {"CODE_U64", CODE_U64},
        {"CODE_I8", CODE_I8}, {"CODE_I16", CODE_I16}, {"CODE_I32", CODE_I32},
        {"CODE_I64", CODE_I64}, {"CODE_F32", CODE_F32}, {"CODE_F64", CODE_F64},
        {"CODE_IP", CODE_IP}, {"CODE_MAP", CODE_MAP}, {"F_NULLABLE", F_NULLABLE},
        {"F_ARRAY", F_ARRAY}, {"F_NONE_EMPTY", F_NONE_EMPTY}, {"F_NOT_NONE", F_NOT_NONE},
    };
    for (size_t i = 0; i < sizeof consts / sizeof consts[0]; i++)
        if (PyModule_AddIntConstant(m, consts[i].name, consts[i].value) < 0) {
            Py_DECREF(m);
            return NULL;
        }
    return m;
}
