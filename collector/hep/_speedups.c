/* collector.hep._speedups: the HEPv3 accept path in C (see collector/hep/speedups.py).
 *
 * scan_v3(data, max_size) walks one "plain" HEPv3 packet and scans its SIP payload in one
 * call. It returns None for anything that is not plain (the caller then uses the pure Python
 * decoder, which is the reference and produces the typed error or the full HepPacket):
 *
 *   plain = magic "HEP3"/"EEP3"; 6 <= total length <= min(len(data), max_size); every chunk
 *   header complete, chunk length >= 6 and not past the total length; only vendor-0 chunk
 *   types that map onto HepPacket fields (0x0001-0x000c, 0x000e, 0x000f, 0x0011, 0x0012,
 *   0x0013), fixed-size ones with exactly the spec.FIXED_VALUE_SIZE length; no type twice;
 *   exactly one 0x000f payload chunk (so no 0x0010).
 *
 * On success it returns
 *   (ts_sec, ts_usec, proto_type, capture_id, payload_start, payload_end, auth_start, auth_end,
 *    corr_start, corr_end, total_length, call_id, is_sip)
 * with byte offsets into data (-1, -1 for an absent auth key / correlation id chunk),
 * call_id == sipscan.find_call_id(payload) and is_sip == sipscan.looks_like_sip(payload).
 *
 * No module state; the only allocations are the result tuple, its ints and call_id.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <string.h>

typedef unsigned char u8;

/* Value size a vendor-0 chunk of type 0..0x13 must have: >= 0 fixed, VAR any, NO = decline.
 * 0x000d (keep-alive) is not a HepPacket field and 0x0010 is compressed: both decline. */
#define VAR (-1)
#define NO (-2)
static const signed char CHUNK_SIZE[0x14] = {
    NO, 1, 1, 4, 4, 16, 16, 2, 2, 4, 4, 1, 4, NO, VAR, VAR, NO, VAR, 2, VAR,
};

static inline unsigned int
rd16(const u8 *p)
{
    return (unsigned int)p[0] << 8 | p[1];
}

static inline unsigned long
rd32(const u8 *p)
{
    return (unsigned long)p[0] << 24 | (unsigned long)p[1] << 16 | (unsigned long)p[2] << 8 |
           p[3];
}

static inline int
is_digit(u8 c)
{
    return c >= '0' && c <= '9';
}

/* RFC 3261 token characters, as in sipscan._METHOD_SP. */
static inline int
is_token(u8 c)
{
    if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || is_digit(c))
        return 1;
    switch (c) {
    case '.': case '!': case '%': case '*': case '_': case '+': case '`': case '\'':
    case '~': case '-':
        return 1;
    }
    return 0;
}

/* ASCII case-insensitive "SIP/" at p (n bytes available). (c | 0x20) == 's' only for s/S. */
static inline int
sip_slash(const u8 *p, Py_ssize_t n)
{
    return n >= 4 && (p[0] | 0x20) == 's' && (p[1] | 0x20) == 'i' && (p[2] | 0x20) == 'p' &&
           p[3] == '/';
}

/* [0-9]+ at *i; advances *i, returns 0 if there is no digit. */
static inline int
digits(const u8 *p, Py_ssize_t n, Py_ssize_t *i)
{
    Py_ssize_t j = *i;
    while (j < n && is_digit(p[j]))
        j++;
    if (j == *i)
        return 0;
    *i = j;
    return 1;
}

/* sipscan.looks_like_sip. Its strict regex accepts a subset of what the liberal rules below
 * accept, so only the liberal rules are needed (the property tests compare the two). */
static int
looks_like_sip(const u8 *p, Py_ssize_t n)
{
    Py_ssize_t i;
    if (sip_slash(p, n)) {
        /* SIP/[0-9]+\.[0-9]+ +[0-9]+(?:[ \t\r\n]|\Z), case-insensitive, anchored */
        i = 4;
        if (!digits(p, n, &i) || i >= n || p[i] != '.')
            return 0;
        i++;
        if (!digits(p, n, &i) || i >= n || p[i] != ' ')
            return 0;
        while (i < n && p[i] == ' ')
            i++;
        if (!digits(p, n, &i))
            return 0;
        return i == n || p[i] == ' ' || p[i] == '\t' || p[i] == '\r' || p[i] == '\n';
    }
    /* method token, one or more SP, then the rest of the line must end in " SIP/x.y" */
    i = 0;
    while (i < n && is_token(p[i]))
        i++;
    if (i == 0 || i >= n || p[i] != ' ')
        return 0;
    while (i < n && p[i] == ' ')
        i++;
    Py_ssize_t start = i;
    const u8 *eol = i < n ? memchr(p + i, '\n', (size_t)(n - i)) : NULL;
    Py_ssize_t end = eol != NULL ? eol - p : n;
    while (end > start && (p[end - 1] == ' ' || p[end - 1] == '\t' || p[end - 1] == '\r'))
        end--;
    Py_ssize_t sp = end - 1;
    while (sp >= start && p[sp] != ' ')
        sp--;
    if (sp <= start) /* no space, or at offset 0 of the line (sp > 0 in the Python) */
        return 0;
    /* fullmatch SIP/[0-9]+\.[0-9]+ on p[sp+1:end] */
    i = sp + 1;
    if (!sip_slash(p + i, end - i))
        return 0;
    i += 4;
    if (!digits(p, end, &i) || i >= end || p[i] != '.')
        return 0;
    i++;
    return digits(p, end, &i) && i == end;
}

/* sipscan.find_call_id: the first "\n(call-id|i)[ \t]*:" header, unless an empty line
 * ("\n\n" or "\n\r\n") ends at or before its "\n". Returns 1 with the stripped value in
 * [*vs, *ve) (possibly empty, which means None), or 0 when there is none. */
static int
find_call_id(const u8 *p, Py_ssize_t n, Py_ssize_t *vs, Py_ssize_t *ve)
{
    Py_ssize_t i = 0;
    const u8 *nl;
    while (i < n && (nl = memchr(p + i, '\n', (size_t)(n - i))) != NULL) {
        Py_ssize_t q = nl - p;
        if (q >= 1 && (p[q - 1] == '\n' || (q >= 2 && p[q - 1] == '\r' && p[q - 2] == '\n')))
            return 0; /* the header section ended before any Call-ID */
        i = q + 1;
        Py_ssize_t j = q + 1;
        if (j < n && (p[j] | 0x20) == 'i') {
            j += 1;
        }
        else if (n - j >= 7 && (p[j] | 0x20) == 'c' && (p[j + 1] | 0x20) == 'a' &&
                 (p[j + 2] | 0x20) == 'l' && (p[j + 3] | 0x20) == 'l' && p[j + 4] == '-' &&
                 (p[j + 5] | 0x20) == 'i' && (p[j + 6] | 0x20) == 'd') {
            j += 7;
        }
        else {
            continue;
        }
        while (j < n && (p[j] == ' ' || p[j] == '\t'))
            j++;
        if (j >= n || p[j] != ':')
            continue;
        j++;
        Py_ssize_t s = j;
        while (j < n && p[j] != '\r' && p[j] != '\n')
            j++;
        Py_ssize_t e = j;
        while (s < e && (p[s] == ' ' || p[s] == '\t'))
            s++;
        while (e > s && (p[e - 1] == ' ' || p[e - 1] == '\t'))
            e--;
        *vs = s;
        *ve = e;
        return 1;
    }
    return 0;
}

static PyObject *
scan_v3(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    (void)module;
    if (nargs != 2) {
        PyErr_Format(PyExc_TypeError, "scan_v3() takes 2 positional arguments (%zd given)",
                     nargs);
        return NULL;
    }
    PyObject *obj = args[0];
    if (!PyBytes_Check(obj)) {
        PyErr_Format(PyExc_TypeError, "scan_v3() data must be bytes, not %.100s",
                     Py_TYPE(obj)->tp_name);
        return NULL;
    }
    int overflow = 0;
    long long max_size = PyLong_AsLongLongAndOverflow(args[1], &overflow);
    if (max_size == -1 && PyErr_Occurred())
        return NULL;
    if (overflow > 0)
        max_size = PY_SSIZE_T_MAX;
    else if (overflow < 0)
        max_size = -1;

    const u8 *d = (const u8 *)PyBytes_AS_STRING(obj);
    Py_ssize_t n = PyBytes_GET_SIZE(obj);
    if (n < 6 || !((d[0] == 'H' || d[0] == 'E') && d[1] == 'E' && d[2] == 'P' && d[3] == '3'))
        Py_RETURN_NONE;
    Py_ssize_t total = (Py_ssize_t)rd16(d + 4);
    if (total < 6 || total > n || (long long)total > max_size)
        Py_RETURN_NONE;

    unsigned long ts_sec = 0, ts_usec = 0, capture_id = 0;
    long proto_type = 1;
    Py_ssize_t pay_s = -1, pay_e = -1, auth_s = -1, auth_e = -1, corr_s = -1, corr_e = -1;
    unsigned long seen = 0;
    Py_ssize_t off = 6;
    while (off < total) {
        if (total - off < 6)
            Py_RETURN_NONE;
        unsigned int vendor = rd16(d + off), type = rd16(d + off + 2);
        Py_ssize_t clen = (Py_ssize_t)rd16(d + off + 4);
        if (clen < 6 || clen > total - off || vendor != 0 || type >= 0x14)
            Py_RETURN_NONE;
        int size = CHUNK_SIZE[type];
        if (size == NO || (size != VAR && clen != 6 + size))
            Py_RETURN_NONE;
        unsigned long bit = 1UL << type;
        if (seen & bit)
            Py_RETURN_NONE;
        seen |= bit;
        Py_ssize_t v = off + 6;
        off += clen;
        switch (type) {
        case 0x09: ts_sec = rd32(d + v); break;
        case 0x0a: ts_usec = rd32(d + v); break;
        case 0x0b: proto_type = d[v]; break;
        case 0x0c: capture_id = rd32(d + v); break;
        case 0x0e: auth_s = v; auth_e = off; break;
        case 0x0f: pay_s = v; pay_e = off; break;
        case 0x11: corr_s = v; corr_e = off; break;
        default: break; /* validated, not returned */
        }
    }
    if (pay_s < 0)
        Py_RETURN_NONE;

    const u8 *pl = d + pay_s;
    Py_ssize_t pn = pay_e - pay_s;
    int is_sip = looks_like_sip(pl, pn);
    PyObject *call_id;
    Py_ssize_t vs, ve;
    if (find_call_id(pl, pn, &vs, &ve) && ve > vs) {
        call_id = PyBytes_FromStringAndSize((const char *)pl + vs, ve - vs);
        if (call_id == NULL)
            return NULL;
    }
    else {
        call_id = Py_NewRef(Py_None);
    }

    PyObject *t = PyTuple_New(13);
    if (t == NULL) {
        Py_DECREF(call_id);
        return NULL;
    }
    PyObject *items[11] = {
        PyLong_FromUnsignedLong(ts_sec),
        PyLong_FromUnsignedLong(ts_usec),
        PyLong_FromLong(proto_type),
        PyLong_FromUnsignedLong(capture_id),
        PyLong_FromSsize_t(pay_s),
        PyLong_FromSsize_t(pay_e),
        PyLong_FromSsize_t(auth_s),
        PyLong_FromSsize_t(auth_e),
        PyLong_FromSsize_t(corr_s),
        PyLong_FromSsize_t(corr_e),
        PyLong_FromSsize_t(total),
    };
    int failed = 0;
    for (int k = 0; k < 11; k++) {
        if (items[k] == NULL)
            failed = 1;
        else
            PyTuple_SET_ITEM(t, k, items[k]); /* steals; the tuple frees it on failure */
    }
    PyTuple_SET_ITEM(t, 11, call_id);
    PyTuple_SET_ITEM(t, 12, Py_NewRef(is_sip ? Py_True : Py_False));
    if (failed) {
        Py_DECREF(t); /* NULL slots are fine for tuple dealloc */
        return NULL;
    }
    return t;
}

static PyMethodDef speedups_methods[] = {
    {"scan_v3", (PyCFunction)(void (*)(void))scan_v3, METH_FASTCALL,
     "scan_v3(data, max_size, /)\n--\n\n"
     "Walk a plain HEPv3 packet and scan its SIP payload; None if it is not plain.\n"
     "See collector.hep.speedups for the contract."},
    {NULL, NULL, 0, NULL},
};

static PyModuleDef_Slot speedups_slots[] = {
    {0, NULL},
};

static struct PyModuleDef speedups_module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "collector.hep._speedups",
    .m_doc = "C hot path for the HEPv3 accept path (see collector.hep.speedups).",
    .m_size = 0,
    .m_methods = speedups_methods,
    .m_slots = speedups_slots,
};

PyMODINIT_FUNC
PyInit__speedups(void)
{
    return PyModuleDef_Init(&speedups_module);
}
