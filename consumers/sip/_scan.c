/* consumers.sip._scan: the header split of `framing._parse`'s CRLF fast path, in C.
 *
 * split_headers(data: bytes, start: int, names: dict) -> (start_line, headers, body_start)
 *                                                         or None
 *
 * Equal to the Python fast path (`framing._fast_headers` on the lines of
 * data[start:data.find(b"\r\n\r\n", start)], split on LF) whenever it returns a tuple:
 * start_line is the first line without its trailing CRs; headers maps the key that `names`
 * (framing's name cache: header name as written -> lower-cased full name) gives each name to
 * the list of values, each stripped of SP, HTAB and CR at both ends; body_start is the
 * offset after the blank line. It returns None, and the caller runs the Python parser, for
 * anything else: no CRLFCRLF, a byte >= 0x80 (the Python path decodes with surrogateescape),
 * an empty line, a line starting with SP/HTAB/CR (folding), a line without a colon, or a name
 * the cache does not hold yet. So it never has to judge syntax or report a reason.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <string.h>

static int is_strip(char c) { return c == ' ' || c == '\t' || c == '\r'; }

static PyObject *split_headers(PyObject *self, PyObject *args) {
    Py_buffer buf;
    Py_ssize_t start;
    PyObject *names;
    if (!PyArg_ParseTuple(args, "y*nO!", &buf, &start, &PyDict_Type, &names)) return NULL;
    const char *data = (const char *)buf.buf;
    Py_ssize_t size = buf.len;
    PyObject *result = NULL, *headers = NULL, *start_line = NULL;
    if (start < 0 || start > size) goto none;

    /* end of the header block: the first CRLFCRLF at or after start */
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
    if (end < 0) goto none;
    for (Py_ssize_t i = start; i < end; i++)
        if ((unsigned char)data[i] >= 0x80) goto none;

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
            first = 0;
        } else {
            if (line == line_end || line[0] == ' ' || line[0] == '\t' || line[0] == '\r')
                goto none;
            const char *colon = memchr(line, ':', (size_t)(line_end - line));
            if (colon == NULL) goto none;
            PyObject *name = PyUnicode_DecodeASCII(line, colon - line, NULL);
            if (name == NULL) goto error;
            PyObject *key = PyDict_GetItemWithError(names, name); /* borrowed */
            Py_DECREF(name);
            if (key == NULL) {
                if (PyErr_Occurred()) goto error;
                goto none;
            }
            const char *v = colon + 1, *ve = line_end;
            while (v < ve && is_strip(*v)) v++;
            while (ve > v && is_strip(ve[-1])) ve--;
            PyObject *value = PyUnicode_DecodeASCII(v, ve - v, NULL);
            if (value == NULL) goto error;
            PyObject *list = PyDict_GetItemWithError(headers, key); /* borrowed */
            if (list == NULL) {
                if (PyErr_Occurred()) {
                    Py_DECREF(value);
                    goto error;
                }
                list = PyList_New(1);
                if (list == NULL) {
                    Py_DECREF(value);
                    goto error;
                }
                PyList_SET_ITEM(list, 0, value); /* steals */
                int rc = PyDict_SetItem(headers, key, list);
                Py_DECREF(list);
                if (rc < 0) goto error;
            } else {
                int rc = PyList_Append(list, value);
                Py_DECREF(value);
                if (rc < 0) goto error;
            }
        }
        if (nl == NULL) break;
        line = nl + 1;
    }
    result = Py_BuildValue("(OOn)", start_line, headers, end + 4);
    goto done;
none:
    result = Py_NewRef(Py_None);
    goto done;
error:
    result = NULL;
done:
    Py_XDECREF(headers);
    Py_XDECREF(start_line);
    PyBuffer_Release(&buf);
    return result;
}

static PyMethodDef methods[] = {
    {"split_headers", split_headers, METH_VARARGS,
     "split_headers(data, start, names) -> (start_line, headers, body_start) or None"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "consumers.sip._scan", "SIP header split (CRLF fast path)", -1,
    methods,
};

PyMODINIT_FUNC PyInit__scan(void) { return PyModule_Create(&module); }
