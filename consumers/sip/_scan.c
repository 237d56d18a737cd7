/* consumers.sip._scan: the header split of `framing._parse`'s CRLF fast path, in C.
 *
 * split_headers(data: bytes, start: int, names: dict)
 *     -> (start_line, headers, body_start, parsed_line) or None
 *
 * Equal to the Python fast path (`framing._fast_headers` on the lines of
 * data[start:data.find(b"\r\n\r\n", start)], split on LF) whenever it returns a tuple:
 * start_line is the first line without its trailing CRs; headers maps the key that `names`
 * (framing's name cache: header name as written -> lower-cased full name) gives each name to
 * the tuple of its values (untracked by the cycle collector), each stripped of SP, HTAB and
 * CR at both ends; body_start is the
 * offset after the blank line; parsed_line is what framing._start_line returns for a start
 * line it finds nothing wrong with in the common shapes (plain_start_line), else None. It
 * returns None, and the caller runs the Python parser, for
 * anything else: no CRLFCRLF, a byte >= 0x80 (the Python path decodes with surrogateescape),
 * an empty line, a line starting with SP/HTAB/CR (folding), a line without a colon, or a name
 * the cache does not hold yet. So it never has to judge syntax or report a reason.
 *
 * key_fields(data: bytes) -> (method, status, call_id, cseq, tag, to, bottom) or None
 *
 * Only what the dedup key needs (`dedup.dedup_key`), without building the message: for a
 * request method is the method of a "METHOD SP URI SP SIP/2.0" start line and status 0; for
 * a response method is None and status the 3-digit code after "SIP/" and one SP. call_id and
 * cseq are the first Call-ID (or i) and CSeq values, bottom the last non-empty Via (or v)
 * value, each stripped as split_headers strips it. For a response other than 100, tag is
 * `name_addr.fast_tag` of the first To (or t) value (None without a To) and to is None; when
 * fast_tag would say NEEDS_PARSE, tag is None and to is that To value, for the caller to
 * parse. Requests and 100s get None for both. It returns None for everything split_headers
 * would refuse (so the values are exactly those of `parse_message(data).headers`), for a
 * name with SP/HTAB around it, a leading CR or LF, any other start line, a status outside
 * 100..699, no or an empty Call-ID, no CSeq, no non-empty Via value, and a bottom Via value
 * with a comma (a comma list: the caller parses).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <string.h>

static int is_strip(char c) { return c == ' ' || c == '\t' || c == '\r'; }

/* The names dict's answers, remembered by the name's bytes: a direct-mapped table, so a known
 * spelling costs a hash and a memcmp instead of a str object and a dict lookup. The dict
 * (framing's name cache) only ever maps a spelling to header_key(spelling), so an answer
 * stays right after the dict drops it; the table starts over when another dict is passed. */
#define NAME_SLOTS 256
#define NAME_LEN_MAX 40
typedef struct {
    Py_ssize_t len;
    char text[NAME_LEN_MAX];
    PyObject *key; /* strong */
} name_slot;
static name_slot name_table[NAME_SLOTS];
static PyObject *name_owner; /* strong: the dict the table's answers came from */

static PyObject *known_name(PyObject *names, const char *p, Py_ssize_t n) {
    if (names != name_owner) {
        for (int i = 0; i < NAME_SLOTS; i++) {
            Py_CLEAR(name_table[i].key);
            name_table[i].len = 0;
        }
        Py_XDECREF(name_owner);
        name_owner = Py_NewRef(names);
    }
    name_slot *slot = NULL;
    if (n > 0 && n <= NAME_LEN_MAX) {
        unsigned int h = 2166136261u;
        for (Py_ssize_t i = 0; i < n; i++) h = (h ^ (unsigned char)p[i]) * 16777619u;
        slot = &name_table[h & (NAME_SLOTS - 1)];
        if (slot->len == n && memcmp(slot->text, p, (size_t)n) == 0) return slot->key;
    }
    PyObject *name = PyUnicode_DecodeASCII(p, n, NULL);
    if (name == NULL) return NULL;
    PyObject *key = PyDict_GetItemWithError(names, name); /* borrowed */
    Py_DECREF(name);
    if (key != NULL && slot != NULL) {
        Py_XSETREF(slot->key, Py_NewRef(key));
        slot->len = n;
        memcpy(slot->text, p, (size_t)n);
    }
    return key;
}

/* framing.COMMON_METHODS */
static const char *const COMMON[] = {
    "INVITE", "ACK", "BYE", "CANCEL", "OPTIONS", "REGISTER", "PRACK", "UPDATE", "SUBSCRIBE",
    "NOTIFY", "REFER", "MESSAGE", "INFO", "PUBLISH", NULL,
};

/* framing._start_line of the ASCII line [p, p+n) when it finds nothing wrong and takes no
 * liberty: "METHOD SP URI SP SIP/2.0" with a common method and a URI not in <>, or
 * "SIP/2.0 SP ddd [SP phrase]" (any case in SIP/2.0) with 100 <= ddd <= 699. Returns the
 * 7-tuple (is_request, is_response, method, ruri, version, status, phrase), Py_None for any
 * other line (the Python code decides), or NULL on a Python error. */
static PyObject *plain_start_line(const char *p, Py_ssize_t n) {
    if (n >= 4 && (p[0] | 0x20) == 's' && (p[1] | 0x20) == 'i' && (p[2] | 0x20) == 'p' &&
        p[3] == '/') {
        if (n < 11 || p[7] != ' ' || memcmp(p + 4, "2.0", 3) != 0) return Py_NewRef(Py_None);
        const char *c = p + 8;
        Py_ssize_t rest = n - 8;
        if (!(c[0] >= '0' && c[0] <= '9' && c[1] >= '0' && c[1] <= '9' && c[2] >= '0' &&
              c[2] <= '9'))
            return Py_NewRef(Py_None);
        if (rest > 3 && c[3] != ' ') return Py_NewRef(Py_None);
        long status = (c[0] - '0') * 100 + (c[1] - '0') * 10 + (c[2] - '0');
        if (status < 100 || status > 699) return Py_NewRef(Py_None);
        const char *phrase = rest > 3 ? c + 4 : c + 3;
        return Py_BuildValue("(OOOOs#ls#)", Py_False, Py_True, Py_None, Py_None, p,
                             (Py_ssize_t)7, status, phrase, (Py_ssize_t)(p + n - phrase));
    }
    const char *sp1 = memchr(p, ' ', (size_t)n);
    if (sp1 == NULL) return Py_NewRef(Py_None);
    const char *sp2 = memchr(sp1 + 1, ' ', (size_t)(p + n - sp1 - 1));
    if (sp2 == NULL || sp2 == sp1 + 1 || sp1[1] == '<') return Py_NewRef(Py_None);
    if (p + n - sp2 - 1 != 7 || memcmp(sp2 + 1, "SIP/2.0", 7) != 0) return Py_NewRef(Py_None);
    Py_ssize_t mlen = sp1 - p;
    int common = 0;
    for (int i = 0; COMMON[i] != NULL; i++) {
        if ((Py_ssize_t)strlen(COMMON[i]) == mlen && memcmp(COMMON[i], p, (size_t)mlen) == 0) {
            common = 1;
            break;
        }
    }
    if (!common) return Py_NewRef(Py_None);
    return Py_BuildValue("(OOs#s#s#OO)", Py_True, Py_False, p, mlen, sp1 + 1,
                         (Py_ssize_t)(sp2 - sp1 - 1), sp2 + 1, (Py_ssize_t)7, Py_None, Py_None);
}

/* End of the header block: the offset of the first CRLFCRLF at or after start, or -1 when
 * there is none or a byte before it is not ASCII (both callers then leave the message to
 * the Python path). */
static Py_ssize_t ascii_block_end(const char *data, Py_ssize_t start, Py_ssize_t size) {
    Py_ssize_t end = -1;
    for (const char *p = data + start; p + 4 <= data + size;) {
        const char *cr = memchr(p, '\r', (size_t)(data + size - p));
        if (cr == NULL || cr + 4 > data + size) break;
        if (cr[1] == '\n' && cr[2] == '\r' && cr[3] == '\n') {
            end = cr - data;
            break;
        }
        p = cr + 1;
    }
    if (end < 0) return -1;
    for (Py_ssize_t i = start; i < end; i++)
        if ((unsigned char)data[i] >= 0x80) return -1;
    return end;
}

static PyObject *split_headers(PyObject *self, PyObject *args) {
    Py_buffer buf;
    Py_ssize_t start;
    PyObject *names;
    if (!PyArg_ParseTuple(args, "y*nO!", &buf, &start, &PyDict_Type, &names)) return NULL;
    const char *data = (const char *)buf.buf;
    Py_ssize_t size = buf.len;
    PyObject *result = NULL, *headers = NULL, *start_line = NULL, *parsed_line = NULL;
    if (start < 0 || start > size) goto none;

    Py_ssize_t end = ascii_block_end(data, start, size);
    if (end < 0) goto none;

    headers = PyDict_New();
    if (headers == NULL) goto error;
    const char *line = data + start;
    const char *block_end = data + end;
    int first = 1;
    for (;;) {
        const char *nl = memchr(line, '\n', (size_t)(block_end - line));
        const char *line_end = nl ? nl : block_end;
        if (first) {
            const char *e = line_end;
            while (e > line && e[-1] == '\r') e--;
            start_line = PyUnicode_DecodeASCII(line, e - line, NULL);
            if (start_line == NULL) goto error;
            parsed_line = plain_start_line(line, e - line);
            if (parsed_line == NULL) goto error;
            first = 0;
        } else {
            if (line == line_end || line[0] == ' ' || line[0] == '\t' || line[0] == '\r')
                goto none;
            const char *colon = memchr(line, ':', (size_t)(line_end - line));
            if (colon == NULL) goto none;
            PyObject *key = known_name(names, line, colon - line); /* borrowed */
            if (key == NULL) {
                if (PyErr_Occurred()) goto error;
                goto none;
            }
            const char *v = colon + 1, *ve = line_end;
            while (v < ve && is_strip(*v)) v++;
            while (ve > v && is_strip(ve[-1])) ve--;
            PyObject *value = PyUnicode_DecodeASCII(v, ve - v, NULL);
            if (value == NULL) goto error;
            /* Values are stored as tuples of str, untracked by the cycle collector (they
               cannot be part of a cycle), which keeps the dict untracked too: a message
               lives as long as its call, and every tracked container it holds would be
               rescanned by each collection until then. A repeated header (Via, Route)
               replaces its tuple with one a value longer. */
            PyObject *old = PyDict_GetItemWithError(headers, key); /* borrowed */
            if (old == NULL && PyErr_Occurred()) {
                Py_DECREF(value);
                goto error;
            }
            Py_ssize_t n = old == NULL ? 0 : PyTuple_GET_SIZE(old);
            PyObject *values = PyTuple_New(n + 1);
            if (values == NULL) {
                Py_DECREF(value);
                goto error;
            }
            for (Py_ssize_t k = 0; k < n; k++)
                PyTuple_SET_ITEM(values, k, Py_NewRef(PyTuple_GET_ITEM(old, k)));
            PyTuple_SET_ITEM(values, n, value); /* steals */
            PyObject_GC_UnTrack(values);
            int rc = PyDict_SetItem(headers, key, values);
            Py_DECREF(values);
            if (rc < 0) goto error;
        }
        if (nl == NULL) break;
        line = nl + 1;
    }
    result = Py_BuildValue("(OOnO)", start_line, headers, end + 4, parsed_line);
    goto done;
none:
    result = Py_NewRef(Py_None);
    goto done;
error:
    result = NULL;
done:
    Py_XDECREF(headers);
    Py_XDECREF(start_line);
    Py_XDECREF(parsed_line);
    PyBuffer_Release(&buf);
    return result;
}


/* case-insensitive equality of [p, p+n) with the lower-case ASCII word w */
static int name_is(const char *p, Py_ssize_t n, const char *w) {
    Py_ssize_t i = 0;
    for (; i < n && w[i]; i++) {
        char c = p[i];
        if (c >= 'A' && c <= 'Z') c = (char)(c + 32);
        if (c != w[i]) return 0;
    }
    return i == n && w[i] == 0;
}

enum { F_OTHER, F_CALL_ID, F_CSEQ, F_TO, F_VIA };

static int field_of(const char *p, Py_ssize_t n) {
    switch (n) {
    case 1:
        switch (p[0]) {
        case 'i': case 'I': return F_CALL_ID;
        case 't': case 'T': return F_TO;
        case 'v': case 'V': return F_VIA;
        }
        return F_OTHER;
    case 2: return name_is(p, n, "to") ? F_TO : F_OTHER;
    case 3: return name_is(p, n, "via") ? F_VIA : F_OTHER;
    case 4: return name_is(p, n, "cseq") ? F_CSEQ : F_OTHER;
    case 7: return name_is(p, n, "call-id") ? F_CALL_ID : F_OTHER;
    }
    return F_OTHER;
}

/* name_addr.fast_tag on the stripped value [v, ve): 1 with the tag in [*ts, *te) (*ts < 0:
 * no tag, None), or 0 for NEEDS_PARSE. */
static int fast_tag(const char *v, const char *ve, const char **ts, const char **te) {
    Py_ssize_t n = ve - v;
    if (memchr(v, '"', (size_t)n) != NULL) return 0;
    Py_ssize_t gt = n - 1;
    while (gt >= 0 && v[gt] != '>') gt--;
    Py_ssize_t from = gt + 1, start = -1;
    for (Py_ssize_t i = from; i + 5 <= n; i++) {
        if (v[i] == ';' && memcmp(v + i, ";tag=", 5) == 0) {
            start = i;
            break;
        }
    }
    if (start < 0) {
        if (memchr(v + from, ';', (size_t)(n - from)) != NULL) return 0;
        *ts = NULL;
        return 1;
    }
    start += 5;
    const char *semi = memchr(v + start, ';', (size_t)(n - start));
    Py_ssize_t end = semi ? semi - v : n;
    if (end == start) return 0;
    for (Py_ssize_t i = start; i < end; i++)
        if (v[i] == ' ' || v[i] == '\t' || v[i] == ',') return 0;
    *ts = v + start;
    *te = v + end;
    return 1;
}

static PyObject *key_fields(PyObject *self, PyObject *arg) {
    Py_buffer buf;
    if (PyObject_GetBuffer(arg, &buf, PyBUF_SIMPLE) < 0) return NULL;
    const char *data = (const char *)buf.buf;
    Py_ssize_t size = buf.len;
    PyObject *result = NULL, *method = NULL, *bottom = NULL, *tag = NULL, *to = NULL;
    PyObject *call_id = NULL, *cseq = NULL;
    const char *to_s = NULL, *to_e = NULL, *via_s = NULL, *via_e = NULL;
    long status = 0;
    if (size == 0 || data[0] == '\r' || data[0] == '\n') goto none;

    Py_ssize_t end = ascii_block_end(data, 0, size);
    if (end < 0) goto none;

    const char *block_end = data + end;
    const char *nl = memchr(data, '\n', (size_t)end);
    const char *line_end = nl ? nl : block_end;
    {
        const char *e = line_end;
        while (e > data && e[-1] == '\r') e--;
        Py_ssize_t n = e - data;
        if (n >= 4 && (data[0] == 'S' || data[0] == 's') && (data[1] == 'I' || data[1] == 'i') &&
            (data[2] == 'P' || data[2] == 'p') && data[3] == '/') {
            const char *sp = memchr(data, ' ', (size_t)n);
            if (sp == NULL || e - sp < 4) goto none;
            const char *c = sp + 1;
            if (!(c[0] >= '0' && c[0] <= '9' && c[1] >= '0' && c[1] <= '9' && c[2] >= '0' &&
                  c[2] <= '9'))
                goto none;
            if (e - c > 3 && c[3] != ' ') goto none;
            status = (c[0] - '0') * 100 + (c[1] - '0') * 10 + (c[2] - '0');
            if (status < 100 || status > 699) goto none;
        } else {
            const char *sp1 = memchr(data, ' ', (size_t)n);
            if (sp1 == NULL || sp1 == data) goto none;
            const char *sp2 = memchr(sp1 + 1, ' ', (size_t)(e - sp1 - 1));
            if (sp2 == NULL || sp2 == sp1 + 1) goto none;
            if (e - sp2 - 1 != 7 || memcmp(sp2 + 1, "SIP/2.0", 7) != 0) goto none;
            if (sp1[1] == '<') goto none;
            method = PyUnicode_DecodeASCII(data, sp1 - data, NULL);
            if (method == NULL) goto error;
        }
    }
    while (nl != NULL) {
        const char *line = nl + 1;
        nl = memchr(line, '\n', (size_t)(block_end - line));
        line_end = nl ? nl : block_end;
        if (line == line_end || line[0] == ' ' || line[0] == '\t' || line[0] == '\r') goto none;
        const char *colon = memchr(line, ':', (size_t)(line_end - line));
        if (colon == NULL) goto none;
        if (colon[-1] == ' ' || colon[-1] == '\t') goto none;
        int field = field_of(line, colon - line);
        if (field == F_OTHER) continue;
        if ((field == F_CALL_ID && call_id) || (field == F_CSEQ && cseq) || (field == F_TO && to_s))
            continue;
        const char *v = colon + 1, *ve = line_end;
        while (v < ve && is_strip(*v)) v++;
        while (ve > v && is_strip(ve[-1])) ve--;
        if (field == F_TO) {
            to_s = v;
            to_e = ve;
        } else if (field == F_VIA) {
            if (ve > v) {
                via_s = v;
                via_e = ve;
            }
        } else {
            PyObject *value = PyUnicode_DecodeASCII(v, ve - v, NULL);
            if (value == NULL) goto error;
            if (field == F_CALL_ID) call_id = value;
            else cseq = value;
        }
    }
    if (call_id == NULL || PyUnicode_GET_LENGTH(call_id) == 0 || cseq == NULL || via_s == NULL)
        goto none;
    if (memchr(via_s, ',', (size_t)(via_e - via_s)) != NULL) goto none;
    bottom = PyUnicode_DecodeASCII(via_s, via_e - via_s, NULL);
    if (bottom == NULL) goto error;
    if (method == NULL && status != 100 && to_s != NULL) {
        const char *ts = NULL, *te = NULL;
        if (fast_tag(to_s, to_e, &ts, &te)) {
            if (ts != NULL) {
                tag = PyUnicode_DecodeASCII(ts, te - ts, NULL);
                if (tag == NULL) goto error;
            }
        } else {
            to = PyUnicode_DecodeASCII(to_s, to_e - to_s, NULL);
            if (to == NULL) goto error;
        }
    }
    result = Py_BuildValue("(OlOOOOO)", method ? method : Py_None, status, call_id, cseq,
                           tag ? tag : Py_None, to ? to : Py_None, bottom);
    goto done;
none:
    result = Py_NewRef(Py_None);
    goto done;
error:
    result = NULL;
done:
    Py_XDECREF(method);
    Py_XDECREF(bottom);
    Py_XDECREF(tag);
    Py_XDECREF(call_id);
    Py_XDECREF(cseq);
    Py_XDECREF(to);
    PyBuffer_Release(&buf);
    return result;
}

static PyMethodDef methods[] = {
    {"split_headers", split_headers, METH_VARARGS,
     "split_headers(data, start, names) -> (start_line, headers, body_start, parsed_line) or None"},
    {"key_fields", key_fields, METH_O,
     "key_fields(data) -> (method, status, call_id, cseq, tag, to, bottom) or None"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "consumers.sip._scan", "SIP header split (CRLF fast path)", -1,
    methods,
};

PyMODINIT_FUNC PyInit__scan(void) { return PyModule_Create(&module); }
