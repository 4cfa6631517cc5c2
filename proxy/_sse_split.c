/* proxy._sse_split: proxy.sse.split_reads for an event stream with no \r, in C, packed as
 * recording_bodies stores it (proxy.prepare.pack_reads calls it).
 *
 * The relay keeps an event stream's body, where each read of it ended and the time it came
 * (proxy.reads.Reads), and at the end of the stream splits the body into events, each timed by
 * the read that completed it. In Python that took some 60 µs a 200-event stream on the relay's
 * thread (and three times that between other processes' turns on a busy machine, with cold
 * caches): the split itself, then a bisect per read to time the events, then two arrays packed
 * from lists. Here it is one pass with memchr.
 *
 * What it gives is exactly what split_reads gives for the same reads, then pack_body packs:
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
    Py_buffer body, ends_in, times_in;
    if (!PyArg_ParseTuple(args, "y*y*y*:split_packed", &body, &ends_in, &times_in))
        return NULL;

    PyObject *result = NULL;
    uint64_t *ends = NULL, *read_end = NULL;
    double *at = NULL, *read_at = NULL;
    Py_ssize_t cap = 0, count = 0;
    if (ends_in.len % 8 || times_in.len % 8) {
        PyErr_SetString(PyExc_ValueError, "split_packed: read ends and times are 8 bytes each");
        goto done;
    }
    Py_ssize_t n = ends_in.len / 8;
    if (times_in.len / 8 != n) {
        PyErr_SetString(PyExc_ValueError, "split_packed: read ends and times differ in length");
        goto done;
    }
    const char *b = body.buf;
    Py_ssize_t total = body.len;
    /* Read through memcpy: a bytes object's buffer need not be 8-byte aligned. */
    read_end = PyMem_Malloc((size_t)(n ? n : 1) * sizeof(uint64_t));
    read_at = PyMem_Malloc((size_t)(n ? n : 1) * sizeof(double));
    if (read_end == NULL || read_at == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    memcpy(read_end, ends_in.buf, (size_t)n * sizeof(uint64_t));
    memcpy(read_at, times_in.buf, (size_t)n * sizeof(double));
    /* The reads must cover the body exactly, each ending at or after the one before. */
    uint64_t last = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        if (read_end[i] < last) {
            PyErr_SetString(PyExc_ValueError, "split_packed: read ends go backwards");
            goto done;
        }
        last = read_end[i];
    }
    if ((n ? last : 0) != (uint64_t)total) {
        PyErr_SetString(PyExc_ValueError, "split_packed: the reads do not end where the body does");
        goto done;
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
        uint64_t end = (uint64_t)((nl + 2) - b);
        while (read_end[r] < end) /* stops at the last read at the latest: its end is total */
            r++;
        if (grow(&ends, &at, &cap, count) < 0)
            goto done;
        ends[count] = end;
        at[count] = read_at[r];
        count++;
        p = nl + 2;
    }
    if ((uint64_t)total > (count ? ends[count - 1] : 0)) { /* the rest, flushed at the end */
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
    result = Py_BuildValue("(NN)", ends_bytes, at_bytes);

done:
    PyBuffer_Release(&body);
    PyBuffer_Release(&ends_in);
    PyBuffer_Release(&times_in);
    PyMem_Free(read_end);
    PyMem_Free(read_at);
    PyMem_Free(ends);
    PyMem_Free(at);
    return result;
}

/* The chunks a body is cut into at the given ends (little-endian unsigned 64-bit, as
 * recording_bodies stores them): what proxy.prepare.unpack_chunks makes of a stored recording,
 * for the assembly worker and every read of a recording. The Python loop it replaces took
 * ~19 µs for 200 chunks, a third of the worker's unpacking. */
static PyObject *
cut(PyObject *module, PyObject *args)
{
    Py_buffer body, ends_in;
    if (!PyArg_ParseTuple(args, "y*y*:cut", &body, &ends_in))
        return NULL;
    PyObject *result = NULL;
    if (ends_in.len % 8) {
        PyErr_SetString(PyExc_ValueError, "cut: chunk ends are 8 bytes each");
        goto done;
    }
    Py_ssize_t n = ends_in.len / 8;
    const unsigned char *e = ends_in.buf;
    const char *b = body.buf;
    PyObject *chunks = PyList_New(n);
    if (chunks == NULL)
        goto done;
    uint64_t start = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        uint64_t end = 0;
        for (int k = 7; k >= 0; k--)
            end = (end << 8) | e[8 * i + k];
        /* As Python's body[start:end]: clamped to the body, empty where the end goes backwards. */
        uint64_t size = (uint64_t)body.len;
        uint64_t from = start < size ? start : size, to = end < size ? end : size;
        PyObject *chunk = PyBytes_FromStringAndSize(b + from, (Py_ssize_t)(to > from ? to - from : 0));
        if (chunk == NULL) {
            Py_DECREF(chunks);
            goto done;
        }
        PyList_SET_ITEM(chunks, i, chunk);
        start = end;
    }
    result = chunks;

done:
    PyBuffer_Release(&body);
    PyBuffer_Release(&ends_in);
    return result;
}

static PyMethodDef methods[] = {
    {"cut", cut, METH_VARARGS,
     "cut(body, ends) -> list[bytes]\n\n"
     "The body cut at each end (packed little-endian unsigned 64-bit): the chunks, in order, "
     "each as body[start:end] would slice it."},
    {"split_packed", split_packed, METH_VARARGS,
     "split_packed(body, read_ends, read_times) -> (ends, offsets) | None\n\n"
     "Where each event of the body ends and when it was complete, packed little-endian (unsigned "
     "64-bit, double), from where each read ended and when it came (native unsigned 64-bit and "
     "double, as array('Q') and array('d') hold them); None when the body holds a \\r."},
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
