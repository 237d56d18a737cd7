/* collector.hep._speedups: the HEPv3 accept path in C (see collector/hep/speedups.py), and
 * decode_v3, the plain-packet path of collector/hep/fast.py decode.
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
 *
 * recv_batch (Linux: recvmmsg) and frame_batch take many packets per call, datagrams from a
 * UDP socket or the complete packets of a HEPv3 stream buffer, and return one record per
 * packet: a Kafka-ready (value, key, timestamp_ms, source) for a plain packet the Python accept
 * path would publish unchanged, else the raw bytes for that path. The contracts, and what
 * "unchanged" means, are in collector/hep/speedups.py.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h> /* defines _GNU_SOURCE, which recvmmsg needs */
#include <string.h>
#ifdef __linux__
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <time.h>
#endif

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

/* What scan_plain found in one plain HEPv3 packet: byte offsets into the packet, -1 when
 * absent. The Call-ID span is the stripped header value; cid_s < 0 when there is none or it is
 * empty (find_call_id returns None for both). */
typedef struct {
    unsigned long ts_sec, ts_usec, capture_id;
    long proto_type;
    Py_ssize_t total, pay_s, pay_e, auth_s, auth_e, corr_s, corr_e, cid_s, cid_e;
    int is_sip;
} scan_t;

/* The walk behind scan_v3: 1 and *s filled for a plain HEPv3 packet, 0 otherwise. The payload
 * scans (is_sip, Call-ID) run only when sip_only is 0 or the packet is SIP-typed. */
static int
scan_plain(const u8 *d, Py_ssize_t n, long long max_size, int sip_only, scan_t *s)
{
    if (n < 6 || !((d[0] == 'H' || d[0] == 'E') && d[1] == 'E' && d[2] == 'P' && d[3] == '3'))
        return 0;
    Py_ssize_t total = (Py_ssize_t)rd16(d + 4);
    if (total < 6 || total > n || (long long)total > max_size)
        return 0;

    s->ts_sec = s->ts_usec = s->capture_id = 0;
    s->proto_type = 1;
    s->pay_s = s->pay_e = s->auth_s = s->auth_e = s->corr_s = s->corr_e = -1;
    s->cid_s = s->cid_e = -1;
    s->is_sip = 0;
    s->total = total;
    unsigned long seen = 0;
    Py_ssize_t off = 6;
    while (off < total) {
        if (total - off < 6)
            return 0;
        unsigned int vendor = rd16(d + off), type = rd16(d + off + 2);
        Py_ssize_t clen = (Py_ssize_t)rd16(d + off + 4);
        if (clen < 6 || clen > total - off || vendor != 0 || type >= 0x14)
            return 0;
        int size = CHUNK_SIZE[type];
        if (size == NO || (size != VAR && clen != 6 + size))
            return 0;
        unsigned long bit = 1UL << type;
        if (seen & bit)
            return 0;
        seen |= bit;
        Py_ssize_t v = off + 6;
        off += clen;
        switch (type) {
        case 0x09: s->ts_sec = rd32(d + v); break;
        case 0x0a: s->ts_usec = rd32(d + v); break;
        case 0x0b: s->proto_type = d[v]; break;
        case 0x0c: s->capture_id = rd32(d + v); break;
        case 0x0e: s->auth_s = v; s->auth_e = off; break;
        case 0x0f: s->pay_s = v; s->pay_e = off; break;
        case 0x11: s->corr_s = v; s->corr_e = off; break;
        default: break; /* validated, not returned */
        }
    }
    if (s->pay_s < 0)
        return 0;
    if (sip_only && s->proto_type != 1)
        return 1;
    const u8 *pl = d + s->pay_s;
    Py_ssize_t pn = s->pay_e - s->pay_s;
    s->is_sip = looks_like_sip(pl, pn);
    Py_ssize_t vs, ve;
    if (find_call_id(pl, pn, &vs, &ve) && ve > vs) {
        s->cid_s = s->pay_s + vs;
        s->cid_e = s->pay_s + ve;
    }
    return 1;
}

/* max_size as the scans take it: any int; beyond the C range it means "no limit" or "none". */
static int
max_size_arg(PyObject *obj, long long *out)
{
    int overflow = 0;
    long long v = PyLong_AsLongLongAndOverflow(obj, &overflow);
    if (v == -1 && PyErr_Occurred())
        return -1;
    if (overflow > 0)
        v = PY_SSIZE_T_MAX;
    else if (overflow < 0)
        v = -1;
    *out = v;
    return 0;
}

/* The (data: bytes, max_size: int, ...) head shared by scan_v3 and decode_v3: checks the
 * argument count and types; 0 with *data and *max_size set, -1 with an exception. */
static int
bytes_and_max_size(const char *name, PyObject *const *args, Py_ssize_t nargs,
                   Py_ssize_t want, PyObject **data, long long *max_size)
{
    if (nargs != want) {
        PyErr_Format(PyExc_TypeError, "%s() takes %zd positional arguments (%zd given)", name,
                     want, nargs);
        return -1;
    }
    if (!PyBytes_Check(args[0])) {
        PyErr_Format(PyExc_TypeError, "%s() data must be bytes, not %.100s", name,
                     Py_TYPE(args[0])->tp_name);
        return -1;
    }
    *data = args[0];
    return max_size_arg(args[1], max_size);
}

static PyObject *
scan_v3(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    (void)module;
    PyObject *obj;
    long long max_size;
    if (bytes_and_max_size("scan_v3", args, nargs, 2, &obj, &max_size) < 0)
        return NULL;

    const u8 *d = (const u8 *)PyBytes_AS_STRING(obj);
    scan_t s;
    if (!scan_plain(d, PyBytes_GET_SIZE(obj), max_size, 0, &s))
        Py_RETURN_NONE;

    PyObject *call_id;
    if (s.cid_s >= 0) {
        call_id = PyBytes_FromStringAndSize((const char *)d + s.cid_s, s.cid_e - s.cid_s);
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
        PyLong_FromUnsignedLong(s.ts_sec),
        PyLong_FromUnsignedLong(s.ts_usec),
        PyLong_FromLong(s.proto_type),
        PyLong_FromUnsignedLong(s.capture_id),
        PyLong_FromSsize_t(s.pay_s),
        PyLong_FromSsize_t(s.pay_e),
        PyLong_FromSsize_t(s.auth_s),
        PyLong_FromSsize_t(s.auth_e),
        PyLong_FromSsize_t(s.corr_s),
        PyLong_FromSsize_t(s.corr_e),
        PyLong_FromSsize_t(s.total),
    };
    int failed = 0;
    for (int k = 0; k < 11; k++) {
        if (items[k] == NULL)
            failed = 1;
        else
            PyTuple_SET_ITEM(t, k, items[k]); /* steals; the tuple frees it on failure */
    }
    PyTuple_SET_ITEM(t, 11, call_id);
    PyTuple_SET_ITEM(t, 12, Py_NewRef(s.is_sip ? Py_True : Py_False));
    if (failed) {
        Py_DECREF(t); /* NULL slots are fine for tuple dealloc */
        return NULL;
    }
    return t;
}

/* decode_v3(data, max_size, packet_type): the HepPacket that fast.decode builds for a plain
 * HEPv3 packet, or None (the caller then runs the Python decoder, which is the reference and
 * raises the typed error). Plain here: magic "HEP3"/"EEP3"; 6 <= total length <=
 * min(len(data), max_size); every chunk header complete, chunk length >= 6 and not past the
 * total length; only vendor-0 field chunk types (0x0001-0x000c, 0x000e, 0x000f, 0x0011,
 * 0x0012, 0x0013), fixed-size ones with exactly their size; no type twice. The packet is
 * built by calling packet_type with HepPacket's twenty fields in order. */
static PyObject *
decode_v3(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    (void)module;
    PyObject *obj;
    long long max_size;
    if (bytes_and_max_size("decode_v3", args, nargs, 3, &obj, &max_size) < 0)
        return NULL;
    const u8 *d = (const u8 *)PyBytes_AS_STRING(obj);
    Py_ssize_t n = PyBytes_GET_SIZE(obj);
    if (n < 6 || !((d[0] == 'H' || d[0] == 'E') && d[1] == 'E' && d[2] == 'P' && d[3] == '3'))
        Py_RETURN_NONE;
    Py_ssize_t total = (Py_ssize_t)rd16(d + 4);
    if (total < 6 || total > n || (long long)total > max_size)
        Py_RETURN_NONE;

    unsigned long family = 2, ip_proto = 17, proto_type = 1;
    unsigned long src_port = 0, dst_port = 0, ts_sec = 0, ts_usec = 0, capture_id = 0;
    long vlan = -1;
    /* value spans [s, e) of the variable chunks, -1 when absent */
    Py_ssize_t src_s = -1, src_e = -1, dst_s = -1, dst_e = -1, pay_s = -1, pay_e = -1;
    Py_ssize_t auth_s = -1, auth_e = -1, corr_s = -1, corr_e = -1, node_s = -1, node_e = -1;
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
        case 0x01: family = d[v]; break;
        case 0x02: ip_proto = d[v]; break;
        case 0x03: case 0x05: src_s = v; src_e = off; break;
        case 0x04: case 0x06: dst_s = v; dst_e = off; break;
        case 0x07: src_port = rd16(d + v); break;
        case 0x08: dst_port = rd16(d + v); break;
        case 0x09: ts_sec = rd32(d + v); break;
        case 0x0a: ts_usec = rd32(d + v); break;
        case 0x0b: proto_type = d[v]; break;
        case 0x0c: capture_id = rd32(d + v); break;
        case 0x0e: auth_s = v; auth_e = off; break;
        case 0x0f: pay_s = v; pay_e = off; break;
        case 0x11: corr_s = v; corr_e = off; break;
        case 0x12: vlan = (long)rd16(d + v); break;
        case 0x13: node_s = v; node_e = off; break;
        default: break;
        }
    }

    static const char zero4[4] = {0, 0, 0, 0};
    const char *c = (const char *)d;
    PyObject *a[20] = {NULL};
    a[0] = PyLong_FromLong(3);
    a[1] = PyLong_FromUnsignedLong(family);
    a[2] = PyLong_FromUnsignedLong(ip_proto);
    a[3] = src_s >= 0 ? PyBytes_FromStringAndSize(c + src_s, src_e - src_s)
                      : PyBytes_FromStringAndSize(zero4, 4);
    a[4] = dst_s >= 0 ? PyBytes_FromStringAndSize(c + dst_s, dst_e - dst_s)
                      : PyBytes_FromStringAndSize(zero4, 4);
    a[5] = PyLong_FromUnsignedLong(src_port);
    a[6] = PyLong_FromUnsignedLong(dst_port);
    a[7] = PyLong_FromUnsignedLong(ts_sec);
    a[8] = PyLong_FromUnsignedLong(ts_usec);
    a[9] = PyLong_FromUnsignedLong(proto_type);
    a[10] = PyLong_FromUnsignedLong(capture_id);
    a[11] = pay_s >= 0 ? PyBytes_FromStringAndSize(c + pay_s, pay_e - pay_s)
                       : PyBytes_FromStringAndSize(NULL, 0);
    a[12] = Py_NewRef(Py_False);
    a[13] = auth_s >= 0 ? PyBytes_FromStringAndSize(c + auth_s, auth_e - auth_s)
                        : Py_NewRef(Py_None);
    a[14] = corr_s >= 0 ? PyBytes_FromStringAndSize(c + corr_s, corr_e - corr_s)
                        : Py_NewRef(Py_None);
    a[15] = node_s >= 0 ? PyBytes_FromStringAndSize(c + node_s, node_e - node_s)
                        : Py_NewRef(Py_None);
    a[16] = vlan >= 0 ? PyLong_FromLong(vlan) : Py_NewRef(Py_None);
    a[17] = PyList_New(0);
    a[18] = PyTuple_New(0);
    a[19] = PyLong_FromSsize_t(n - total);
    PyObject *result = NULL;
    int k;
    for (k = 0; k < 20; k++)
        if (a[k] == NULL)
            break;
    if (k == 20)
        result = PyObject_Vectorcall(args[2], a, 20, NULL);
    for (k = 0; k < 20; k++)
        Py_XDECREF(a[k]);
    return result;
}

/* ---- batches: many packets per call, one Kafka-ready record each ------------------------- */

/* A batch being built: the record list and the totals of its fast records. */
typedef struct {
    PyObject *records;
    Py_ssize_t n_slow, fast_bytes, fast_trailing;
    long long received_ms;
    long long max_size;
    int fast;
} batch_t;

/* Append the record for one packet of n bytes at d, from source number src (a small int):
 *   fast: (value, key, timestamp_ms, src)  -- a plain HEPv3 packet the Python accept path
 *         publishes unchanged: no auth key chunk, SIP-typed only when the payload is SIP;
 *   slow: (packet, None, -1, src)         -- anything else, for Ingest.accept.
 * Returns 1 for fast, 0 for slow, -1 on a Python error. */
static int
emit(batch_t *b, const u8 *d, Py_ssize_t n, PyObject *src)
{
    scan_t s;
    int fast = b->fast && scan_plain(d, n, b->max_size, 1, &s) && s.auth_s < 0 &&
               (s.proto_type != 1 || s.is_sip);
    PyObject *value = NULL, *key = NULL, *ts = NULL, *rec;
    if (fast) {
        value = PyBytes_FromStringAndSize((const char *)d, s.total);
        if (s.proto_type == 1 && s.cid_s >= 0)
            key = PyBytes_FromStringAndSize((const char *)d + s.cid_s, s.cid_e - s.cid_s);
        else if (s.corr_e > s.corr_s) /* an empty correlation id is no key either */
            key = PyBytes_FromStringAndSize((const char *)d + s.corr_s, s.corr_e - s.corr_s);
        else
            key = Py_NewRef(Py_None);
        long long ts_ms = (long long)s.ts_sec * 1000 + (long long)(s.ts_usec / 1000);
        ts = PyLong_FromLongLong(ts_ms ? ts_ms : b->received_ms);
    }
    else {
        value = PyBytes_FromStringAndSize((const char *)d, n);
        key = Py_NewRef(Py_None);
        ts = PyLong_FromLong(-1);
    }
    if (value == NULL || key == NULL || ts == NULL)
        goto fail;
    rec = PyTuple_New(4);
    if (rec == NULL)
        goto fail;
    PyTuple_SET_ITEM(rec, 0, value);
    PyTuple_SET_ITEM(rec, 1, key);
    PyTuple_SET_ITEM(rec, 2, ts);
    PyTuple_SET_ITEM(rec, 3, Py_NewRef(src));
    int rc = PyList_Append(b->records, rec);
    Py_DECREF(rec);
    if (rc < 0)
        return -1;
    if (fast) {
        b->fast_bytes += n;
        if (n > s.total)
            b->fast_trailing++;
        return 1;
    }
    b->n_slow++;
    return 0;
fail:
    Py_XDECREF(value);
    Py_XDECREF(key);
    Py_XDECREF(ts);
    return -1;
}

#ifdef __linux__ /* recvmmsg */

static long long
realtime_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (long long)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

#define MAX_SLOTS 1024

/* (host, port) of a datagram's source as the socket module gives them. */
static PyObject *
source_address(const struct sockaddr_storage *sa, PyObject **port)
{
    char text[INET6_ADDRSTRLEN];
    unsigned int p = 0;
    const char *host = NULL;
    if (sa->ss_family == AF_INET) {
        const struct sockaddr_in *a = (const struct sockaddr_in *)sa;
        host = inet_ntop(AF_INET, &a->sin_addr, text, sizeof text);
        p = ntohs(a->sin_port);
    }
    else if (sa->ss_family == AF_INET6) {
        const struct sockaddr_in6 *a = (const struct sockaddr_in6 *)sa;
        host = inet_ntop(AF_INET6, &a->sin6_addr, text, sizeof text);
        p = ntohs(a->sin6_port);
    }
    *port = PyLong_FromUnsignedLong(p);
    if (*port == NULL)
        return NULL;
    PyObject *h = PyUnicode_FromString(host != NULL ? host : "?");
    if (h == NULL)
        Py_CLEAR(*port);
    return h;
}

static PyObject *
recv_batch(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    (void)module;
    if (nargs != 5) {
        PyErr_Format(PyExc_TypeError, "recv_batch() takes 5 positional arguments (%zd given)",
                     nargs);
        return NULL;
    }
    int fd = PyObject_AsFileDescriptor(args[0]);
    if (fd < 0)
        return NULL;
    Py_ssize_t slots = PyLong_AsSsize_t(args[2]);
    if (slots == -1 && PyErr_Occurred())
        return NULL;
    if (slots < 1 || slots > MAX_SLOTS) {
        PyErr_Format(PyExc_ValueError, "recv_batch() slots must be 1..%d", MAX_SLOTS);
        return NULL;
    }
    batch_t b = {.records = NULL};
    if (max_size_arg(args[3], &b.max_size) < 0)
        return NULL;
    b.fast = PyObject_IsTrue(args[4]);
    if (b.fast < 0)
        return NULL;
    Py_buffer view;
    if (PyObject_GetBuffer(args[1], &view, PyBUF_WRITABLE) < 0)
        return NULL;
    Py_ssize_t slot_size = view.len / slots;
    if (slot_size < 1) {
        PyBuffer_Release(&view);
        PyErr_SetString(PyExc_ValueError, "recv_batch() arena smaller than slots");
        return NULL;
    }
    struct mmsghdr *msgs = PyMem_RawCalloc((size_t)slots, sizeof *msgs);
    struct iovec *iov = PyMem_RawCalloc((size_t)slots, sizeof *iov);
    struct sockaddr_storage *names = PyMem_RawCalloc((size_t)slots, sizeof *names);
    PyObject *sources = NULL, *result = NULL;
    if (msgs == NULL || iov == NULL || names == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    for (Py_ssize_t i = 0; i < slots; i++) {
        iov[i].iov_base = (char *)view.buf + i * slot_size;
        iov[i].iov_len = (size_t)slot_size;
        msgs[i].msg_hdr.msg_iov = &iov[i];
        msgs[i].msg_hdr.msg_iovlen = 1;
        msgs[i].msg_hdr.msg_name = &names[i];
        msgs[i].msg_hdr.msg_namelen = sizeof names[i];
    }
    /* Under load datagrams are already queued: take them without letting go of the GIL, since
     * every release hands it to a waiting thread and costs two context switches. Only an empty
     * socket is waited on with the GIL released (blocking for the first datagram, then taking
     * whatever else is queued). */
    int got = recvmmsg(fd, msgs, (unsigned int)slots, MSG_DONTWAIT, NULL);
    int err = got < 0 ? errno : 0;
    if (got < 0 && (err == EAGAIN || err == EWOULDBLOCK || err == EINTR)) {
        do {
            Py_BEGIN_ALLOW_THREADS
            got = recvmmsg(fd, msgs, (unsigned int)slots, MSG_WAITFORONE, NULL);
            err = got < 0 ? errno : 0;
            Py_END_ALLOW_THREADS
        } while (got < 0 && err == EINTR);
    }
    if (got < 0) {
        errno = err;
        PyErr_SetFromErrno(PyExc_OSError);
        goto done;
    }
    long long received_us = realtime_us();
    b.received_ms = received_us / 1000;
    b.records = PyList_New(0);
    sources = PyList_New(0);
    if (b.records == NULL || sources == NULL)
        goto done;
    /* Source numbering: datagrams from one sender usually come in runs, so compare with the
     * previous datagram's source first, then with the (few) others of this batch. */
    Py_ssize_t src_of[MAX_SLOTS];
    Py_ssize_t fast_of[MAX_SLOTS];
    Py_ssize_t nsrc = 0;
    for (int i = 0; i < got; i++) {
        struct msghdr *h = &msgs[i].msg_hdr;
        Py_ssize_t k = -1;
        if (i > 0 && h->msg_namelen == msgs[i - 1].msg_hdr.msg_namelen &&
            memcmp(&names[i], &names[i - 1], h->msg_namelen) == 0)
            k = src_of[i - 1];
        for (Py_ssize_t j = 0; k < 0 && j < i; j++)
            if (h->msg_namelen == msgs[j].msg_hdr.msg_namelen &&
                memcmp(&names[i], &names[j], h->msg_namelen) == 0)
                k = src_of[j];
        if (k < 0) {
            PyObject *port, *host = source_address(&names[i], &port);
            if (host == NULL)
                goto done;
            PyObject *pair = PyTuple_Pack(2, host, port);
            Py_DECREF(host);
            Py_DECREF(port);
            if (pair == NULL)
                goto done;
            int rc = PyList_Append(sources, pair);
            Py_DECREF(pair);
            if (rc < 0)
                goto done;
            k = nsrc;
            fast_of[nsrc++] = 0;
        }
        src_of[i] = k;
        PyObject *src = PyLong_FromSsize_t(k);
        if (src == NULL)
            goto done;
        int r = emit(&b, (const u8 *)iov[i].iov_base, (Py_ssize_t)msgs[i].msg_len, src);
        Py_DECREF(src);
        if (r < 0)
            goto done;
        fast_of[k] += r;
    }
    /* sources become (host, port, fast records from it) */
    for (Py_ssize_t k = 0; k < nsrc; k++) {
        PyObject *pair = PyList_GET_ITEM(sources, k);
        PyObject *n = PyLong_FromSsize_t(fast_of[k]);
        if (n == NULL)
            goto done;
        PyObject *triple = PyTuple_Pack(3, PyTuple_GET_ITEM(pair, 0), PyTuple_GET_ITEM(pair, 1), n);
        Py_DECREF(n);
        if (triple == NULL)
            goto done;
        PyList_SetItem(sources, k, triple); /* steals triple, drops pair */
    }
    result = Py_BuildValue("(LOOnnn)", received_us, b.records, sources, b.n_slow, b.fast_bytes,
                           b.fast_trailing);
done:
    Py_XDECREF(b.records);
    Py_XDECREF(sources);
    PyMem_RawFree(msgs);
    PyMem_RawFree(iov);
    PyMem_RawFree(names);
    PyBuffer_Release(&view);
    return result;
}

#endif /* __linux__ */

/* Stream framing errors, as frame_batch reports them (see collector.hep.speedups). */
enum { FRAME_OK = 0, FRAME_BAD_MAGIC = 1, FRAME_BAD_LENGTH = 2, FRAME_OVERSIZE = 3 };

static PyObject *
frame_batch(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    (void)module;
    if (nargs != 7) {
        PyErr_Format(PyExc_TypeError, "frame_batch() takes 7 positional arguments (%zd given)",
                     nargs);
        return NULL;
    }
    Py_ssize_t start = PyLong_AsSsize_t(args[1]);
    Py_ssize_t end = PyLong_AsSsize_t(args[2]);
    if ((start == -1 || end == -1) && PyErr_Occurred())
        return NULL;
    long long limit;
    batch_t b = {.records = NULL};
    if (max_size_arg(args[3], &limit) < 0 || max_size_arg(args[4], &b.max_size) < 0)
        return NULL;
    long long received_us = PyLong_AsLongLong(args[5]);
    if (received_us == -1 && PyErr_Occurred())
        return NULL;
    b.received_ms = received_us >= 0 ? received_us / 1000 : -((-received_us + 999) / 1000);
    b.fast = PyObject_IsTrue(args[6]);
    if (b.fast < 0)
        return NULL;
    Py_buffer view;
    if (PyObject_GetBuffer(args[0], &view, PyBUF_SIMPLE) < 0)
        return NULL;
    PyObject *result = NULL;
    if (start < 0 || end < start || end > view.len) {
        PyErr_SetString(PyExc_ValueError, "frame_batch() needs 0 <= start <= end <= len(data)");
        goto done;
    }
    b.records = PyList_New(0);
    if (b.records == NULL)
        goto done;
    PyObject *src = PyLong_FromLong(0);
    if (src == NULL)
        goto done;
    const u8 *d = (const u8 *)view.buf;
    Py_ssize_t off = start;
    int error = FRAME_OK;
    while (end - off >= 6) {
        const u8 *p = d + off;
        if (!((p[0] == 'H' || p[0] == 'E') && p[1] == 'E' && p[2] == 'P' && p[3] == '3')) {
            error = FRAME_BAD_MAGIC;
            break;
        }
        Py_ssize_t length = (Py_ssize_t)rd16(p + 4);
        if (length < 6) {
            error = FRAME_BAD_LENGTH;
            break;
        }
        if ((long long)length > limit) {
            error = FRAME_OVERSIZE;
            break;
        }
        if (end - off < length)
            break;
        if (emit(&b, p, length, src) < 0) {
            Py_DECREF(src);
            goto done;
        }
        off += length;
    }
    Py_DECREF(src);
    result = Py_BuildValue("(Onnni)", b.records, off, b.n_slow, b.fast_bytes, error);
done:
    Py_XDECREF(b.records);
    PyBuffer_Release(&view);
    return result;
}

static PyMethodDef speedups_methods[] = {
    {"scan_v3", (PyCFunction)(void (*)(void))scan_v3, METH_FASTCALL,
     "scan_v3(data, max_size, /)\n--\n\n"
     "Walk a plain HEPv3 packet and scan its SIP payload; None if it is not plain.\n"
     "See collector.hep.speedups for the contract."},
#ifdef __linux__
    {"recv_batch", (PyCFunction)(void (*)(void))recv_batch, METH_FASTCALL,
     "recv_batch(sock, arena, slots, max_size, fast, /)\n--\n\n"
     "Receive up to `slots` datagrams with one recvmmsg call and turn each into a record.\n"
     "See collector.hep.speedups for the contract."},
#endif
    {"decode_v3", (PyCFunction)(void (*)(void))decode_v3, METH_FASTCALL,
     "decode_v3(data, max_size, packet_type, /)\n--\n\n"
     "The HepPacket of a plain HEPv3 packet (fast.decode), or None if it is not plain."},
    {"frame_batch", (PyCFunction)(void (*)(void))frame_batch, METH_FASTCALL,
     "frame_batch(data, start, end, max_packet_bytes, max_size, received_us, fast, /)\n--\n\n"
     "Cut the HEPv3 stream in data[start:end] into packets and turn each into a record.\n"
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
