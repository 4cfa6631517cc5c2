/* proxy._sse_split: proxy.sse.split_reads for an event stream with no \r, in C, packed as
 * recording_bodies stores it (proxy.prepare.pack_reads calls it).
 *
 * The relay keeps each read of an event stream and the time it came, and at the end of the
 * stream splits the reads into events, each timed by the read that completed it. In Python that
 * took some 60 µs a 200-event stream on the relay's thread (and three times that between other
 * processes' turns on a busy machine, with cold caches): the split itself, then a bisect per read
 * to time the events, then two arrays packed from lists. Here it is one pass with memchr.
 *
 * What it gives is exactly what split_reads gives, then pack_body packs:
 *  - the body: the reads joined;
 *  - an event ends after each "\n\n", found left to right without overlap (bytes.split's
 *    matches); what follows the last one, if anything, is one more event, flushed at the end;
 *  - an event's time is that of the first read whose end is at or past the event's end (the
 *    flushed rest: the last read's);
 *  - the ends as unsigned 64-bit and the times as IEEE doubles, little-endian, 8 bytes each.
 * A stream with a \r anywhere (line ends \r\n or \r) returns None: Python splits it, the slow way
 * that knows every line end.
 *
 * The module keeps no state.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

static void
put_le64(unsigned char *out, uint64_t v)
{
    for (int k = 0; k < 8; k++) {
        out[k] = (unsigned char)(v & 0xff);
        v >>= 8;
    }
}

/* Room for one more event in ends/at; -1 with MemoryError set when there is none. */
static int
grow(uint64_t **ends, double **at, Py_ssize_t *cap, Py_ssize_t count)
{
    if (count < *cap)
        return 0;
    Py_ssize_t want = *cap ? *cap * 2 : 256;
    uint64_t *e = PyMem_Realloc(*ends, (size_t)want * sizeof(uint64_t));
    if (e == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    *ends = e;
    double *a = PyMem_Realloc(*at, (size_t)want * sizeof(double));
    if (a == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    *at = a;
    *cap = want;
    return 0;
}

static PyObject *
split_packed(PyObject *module, PyObject *args)
{
    PyObject *reads, *times;
    if (!PyArg_ParseTuple(args, "O!O!:split_packed", &PyList_Type, &reads, &PyList_Type, &times))
        return NULL;
    Py_ssize_t n = PyList_GET_SIZE(reads);
    if (PyList_GET_SIZE(times) != n) {
        PyErr_SetString(PyExc_ValueError, "split_packed: reads and times differ in length");
        return NULL;
    }

    PyObject *result = NULL, *body = NULL;
    Py_ssize_t *read_end = PyMem_Malloc((size_t)(n ? n : 1) * sizeof(Py_ssize_t));
    double *read_at = PyMem_Malloc((size_t)(n ? n : 1) * sizeof(double));
    uint64_t *ends = NULL;
    double *at = NULL;
    Py_ssize_t cap = 0, count = 0;
    if (read_end == NULL || read_at == NULL) {
        PyErr_NoMemory();
        goto done;
    }

    Py_ssize_t total = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *item = PyList_GET_ITEM(reads, i);
        if (!PyBytes_Check(item)) {
            PyErr_Format(PyExc_TypeError, "split_packed: read %zd is %.100s, not bytes", i, Py_TYPE(item)->tp_name);
            goto done;
        }
        if (PyBytes_GET_SIZE(item) > PY_SSIZE_T_MAX - total) {
            PyErr_SetString(PyExc_OverflowError, "split_packed: the reads are too long together");
            goto done;
        }
        total += PyBytes_GET_SIZE(item);
        read_end[i] = total;
        read_at[i] = PyFloat_AsDouble(PyList_GET_ITEM(times, i));
        if (read_at[i] == -1.0 && PyErr_Occurred())
            goto done;
    }

    body = PyBytes_FromStringAndSize(NULL, total);
    if (body == NULL)
        goto done;
    char *b = PyBytes_AS_STRING(body);
    Py_ssize_t pos = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *item = PyList_GET_ITEM(reads, i);
        memcpy(b + pos, PyBytes_AS_STRING(item), (size_t)PyBytes_GET_SIZE(item));
        pos += PyBytes_GET_SIZE(item);
    }
    if (total && memchr(b, '\r', (size_t)total) != NULL) {
        result = Py_NewRef(Py_None);
        goto done;
    }

    const char *p = b, *stop = b + total;
    Py_ssize_t r = 0; /* the read that completes the event found next: reads only move forward */
    while (p < stop) {
        const char *nl = memchr(p, '\n', (size_t)(stop - p));
        if (nl == NULL || nl + 1 >= stop)
            break;
        if (nl[1] != '\n') {
            p = nl + 1;
            continue;
        }
        Py_ssize_t end = (nl + 2) - b;
        while (read_end[r] < end) /* stops at the last read at the latest: its end is total */
            r++;
        if (grow(&ends, &at, &cap, count) < 0)
            goto done;
        ends[count] = (uint64_t)end;
        at[count] = read_at[r];
        count++;
        p = nl + 2;
    }
    if (total > (count ? (Py_ssize_t)ends[count - 1] : 0)) { /* the rest, flushed at the end */
        if (grow(&ends, &at, &cap, count) < 0)
            goto done;
        ends[count] = (uint64_t)total;
        at[count] = read_at[n - 1];
        count++;
    }

    PyObject *ends_bytes = PyBytes_FromStringAndSize(NULL, count * 8);
    PyObject *at_bytes = ends_bytes ? PyBytes_FromStringAndSize(NULL, count * 8) : NULL;
    if (at_bytes == NULL) {
        Py_XDECREF(ends_bytes);
        goto done;
    }
    unsigned char *eo = (unsigned char *)PyBytes_AS_STRING(ends_bytes);
    unsigned char *ao = (unsigned char *)PyBytes_AS_STRING(at_bytes);
    for (Py_ssize_t k = 0; k < count; k++) {
        uint64_t bits;
        memcpy(&bits, &at[k], sizeof bits);
        put_le64(eo + 8 * k, ends[k]);
        put_le64(ao + 8 * k, bits);
    }
    result = Py_BuildValue("(ONN)", body, ends_bytes, at_bytes);

done:
    Py_XDECREF(body);
    PyMem_Free(read_end);
    PyMem_Free(read_at);
    PyMem_Free(ends);
    PyMem_Free(at);
    return result;
}

static PyMethodDef methods[] = {
    {"split_packed", split_packed, METH_VARARGS,
     "split_packed(reads, times) -> (body, ends, offsets) | None\n\n"
     "The reads joined, and where each event ends in them and when it was complete, packed "
     "little-endian (unsigned 64-bit, double); None when the stream holds a \\r."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "proxy._sse_split",
    "proxy.sse.split_reads for a stream with no \\r, in C, packed (see proxy.prepare.pack_reads).", 0, methods,
};

PyMODINIT_FUNC
PyInit__sse_split(void)
{
    return PyModule_Create(&module);
}
