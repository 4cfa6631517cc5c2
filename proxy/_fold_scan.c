/* proxy._fold_scan: the steady state of proxy.assemble._ChoicesFold.add_run, in C.
 *
 * add_run folds a run of OpenAI's usual content chunks,
 *
 *     data: {<head>"<content>"<close><rest>}\n\n
 *
 * where <head> is the bytes every chunk of the run begins with (up to and including the
 * quote that opens the content string) and <close> is the choice's close, followed in keyed
 * mode by the members after the choice up to the last one's value. Per chunk it reads the
 * content string, and either that last value (keyed mode) or checks that the members after
 * the choice are byte for byte those of the chunk before (same-tail mode). scan() does the
 * same loop for the chunks whose every piece it can read exactly as orjson.loads does, and
 * stops at the first one it cannot: the Python loop then takes that chunk the long way, with
 * its state as the scan left it, and calls the scan again.
 *
 * Why it stops where it stops: it reads only what it can prove orjson reads alike.
 *  - A string with no backslash, no byte below 0x20 and no quote inside is its bytes as UTF-8;
 *    orjson and PyUnicode_DecodeUTF8(..., "strict") reject the same bytes (surrogates,
 *    overlongs, code points past U+10FFFF, stray continuation bytes) and accept the rest
 *    (DEL, U+2028, noncharacters, 4-byte characters). Escapes would need a JSON decoder.
 *  - An integer -?(0|[1-9][0-9]{0,18}) of at most 2**63 - 1 either way is an int to orjson,
 *    which reads "-0" as the int 0 and refuses leading zeros. Larger ones (orjson reads a
 *    float below -2**63 and past 2**64 - 1), floats, true/false/null and whitespace are
 *    left to Python, as is anything else. (19 digits: a time in nanoseconds, as in the
 *    bench stream's "ts", has them.)
 *  - The content ends at its first quote, so the close is found there exactly when the
 *    Python loop's find(close, start) finds it there (every match starts with a quote, and
 *    the one at the opening quote itself is checked apart).
 * A stop costs one chunk on the Python path, never a different result.
 *
 * The module keeps no state: everything the loop knows comes in as arguments and goes out
 * as the result.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <limits.h>
#include <string.h>

/* Index of the quote that ends a plain string whose body starts at s[from], or -1 when a
 * backslash or a control byte comes first or no quote comes before limit. */
static Py_ssize_t
plain_string_end(const unsigned char *s, Py_ssize_t from, Py_ssize_t limit)
{
    for (Py_ssize_t i = from; i < limit; i++) {
        unsigned char c = s[i];
        if (c == '"')
            return i;
        if (c == '\\' || c < 0x20)
            return -1;
    }
    return -1;
}

/* s[0:len] as str; NULL with no exception set when it is not strict UTF-8. */
static PyObject *
decode(const unsigned char *s, Py_ssize_t len)
{
    PyObject *text = PyUnicode_DecodeUTF8((const char *)s, len, "strict");
    if (text == NULL && PyErr_ExceptionMatches(PyExc_UnicodeDecodeError))
        PyErr_Clear();
    return text;
}

/* The keyed value s[0:len] when it is a plain string or a small integer; NULL with no
 * exception set otherwise. */
static PyObject *
read_value(const unsigned char *s, Py_ssize_t len)
{
    if (len >= 2 && s[0] == '"') {
        if (plain_string_end(s, 1, len) != len - 1)
            return NULL;
        return decode(s + 1, len - 2);
    }
    Py_ssize_t i = 0;
    int negative = 0;
    if (i < len && s[i] == '-') {
        negative = 1;
        i++;
    }
    Py_ssize_t digits = len - i;
    if (digits < 1 || digits > 19 || (s[i] == '0' && digits > 1))
        return NULL;
    /* 19 digits stay below 2**64; past 2**63 - 1 orjson may read a float, so stop there. */
    unsigned long long value = 0;
    for (; i < len; i++) {
        if (s[i] < '0' || s[i] > '9')
            return NULL;
        value = value * 10 + (unsigned long long)(s[i] - '0');
    }
    if (value > (unsigned long long)LLONG_MAX)
        return NULL;
    return PyLong_FromLongLong(negative ? -(long long)value : (long long)value);
}

PyDoc_STRVAR(scan_doc,
"scan(chunks, n, head, close, keyed, last_tail, parts) -> (stop, value)\n\
\n\
Take the usual content chunks of a run from chunks[n] on, appending each one's content\n\
to parts; stop at the first chunk not surely usual. ``stop`` is that chunk's index (or\n\
len(chunks)); ``value`` is the last value taken in keyed mode (``keyed`` true: ``close``\n\
runs up to the last member's value), else None. In same-tail mode a chunk is taken only\n\
when the bytes after the close, up to the line end, equal ``last_tail`` (None: never).\n\
``chunks`` other than an exact list or tuple is not scanned.");

static PyObject *
scan(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    (void)module;
    if (nargs != 7) {
        PyErr_Format(PyExc_TypeError, "scan() takes 7 arguments (%zd given)", nargs);
        return NULL;
    }
    PyObject *chunks = args[0];
    Py_ssize_t n = PyLong_AsSsize_t(args[1]);
    if (n == -1 && PyErr_Occurred())
        return NULL;
    PyObject *head_obj = args[2], *close_obj = args[3], *tail_obj = args[5], *parts = args[6];
    int keyed = PyObject_IsTrue(args[4]);
    if (keyed < 0)
        return NULL;
    if (!PyBytes_Check(head_obj) || !PyBytes_Check(close_obj)
        || (tail_obj != Py_None && !PyBytes_Check(tail_obj))) {
        PyErr_SetString(PyExc_TypeError, "scan(): head and close must be bytes, last_tail bytes or None");
        return NULL;
    }
    if (!PyList_Check(parts)) {
        PyErr_SetString(PyExc_TypeError, "scan(): parts must be a list");
        return NULL;
    }
    const unsigned char *head = (const unsigned char *)PyBytes_AS_STRING(head_obj);
    Py_ssize_t head_len = PyBytes_GET_SIZE(head_obj);
    const unsigned char *close = (const unsigned char *)PyBytes_AS_STRING(close_obj);
    Py_ssize_t close_len = PyBytes_GET_SIZE(close_obj);
    /* The content's opening quote, the last byte of head (as add_run's ``start``). */
    Py_ssize_t start = head_len - 1;
    if (start < 0 || head[start] != '"' || close_len < 1 || close[0] != '"') {
        PyErr_SetString(PyExc_ValueError, "scan(): head must end, and close begin, with a quote");
        return NULL;
    }
    /* Same-tail mode with no tail to match takes nothing. */
    if (!keyed && tail_obj == Py_None)
        return Py_BuildValue("(nO)", n, Py_None);
    /* A list subclass may index otherwise; anything but these two is left to Python. */
    int is_list = PyList_CheckExact(chunks);
    if (!is_list && !PyTuple_CheckExact(chunks))
        return Py_BuildValue("(nO)", n, Py_None);

    if (n < 0) {
        PyErr_SetString(PyExc_ValueError, "scan(): n must not be negative");
        return NULL;
    }
    PyObject *value = NULL;  /* the last keyed value taken */
    for (;;) {
        /* Re-read every time: allocating may run a collection, and that arbitrary code. */
        Py_ssize_t count = is_list ? PyList_GET_SIZE(chunks) : PyTuple_GET_SIZE(chunks);
        if (n >= count)
            break;
        PyObject *raw_obj = is_list ? PyList_GET_ITEM(chunks, n) : PyTuple_GET_ITEM(chunks, n);
        if (!PyBytes_CheckExact(raw_obj))
            break;
        Py_INCREF(raw_obj);
        const unsigned char *raw = (const unsigned char *)PyBytes_AS_STRING(raw_obj);
        Py_ssize_t len = PyBytes_GET_SIZE(raw_obj);
        PyObject *content = NULL, *this_value = NULL;
        Py_ssize_t end, from;

        /* raw.startswith(head) and raw[-3:] == b"}\n\n" */
        if (len < head_len + 3 || memcmp(raw, head, head_len) != 0 || memcmp(raw + len - 3, "}\n\n", 3) != 0)
            goto stop;
        /* find(close, start) at the opening quote: the content would be a lone quote. */
        if (start + close_len <= len && memcmp(raw + start, close, close_len) == 0)
            goto stop;
        end = plain_string_end(raw, start + 1, len);
        if (end < 0 || end + close_len > len || memcmp(raw + end, close, close_len) != 0)
            goto stop;
        if (keyed) {
            /* rest = raw[end + keyed_len : -3], one scalar */
            from = end + close_len;
            if (from >= len - 3)
                goto stop;
            this_value = read_value(raw + from, len - 3 - from);
            if (this_value == NULL)
                goto stop;
        }
        else {
            /* tail = raw[end + close_len : -2] == last_tail */
            from = end + close_len;
            Py_ssize_t tail_len = len - 2 - from;
            if (tail_len < 0)
                tail_len = 0;
            if (tail_len != PyBytes_GET_SIZE(tail_obj)
                || memcmp(raw + from, PyBytes_AS_STRING(tail_obj), tail_len) != 0)
                goto stop;
        }
        content = decode(raw + start + 1, end - start - 1);
        if (content == NULL)
            goto stop;
        if (PyList_Append(parts, content) < 0)
            goto fail;
        Py_DECREF(content);
        Py_DECREF(raw_obj);
        if (this_value != NULL) {
            Py_XSETREF(value, this_value);
        }
        n++;
        continue;
    stop:
        Py_XDECREF(this_value);
        Py_XDECREF(content);
        Py_DECREF(raw_obj);
        if (PyErr_Occurred()) {  /* not a chunk to stop at: memory ran out */
            Py_XDECREF(value);
            return NULL;
        }
        break;
    fail:
        Py_XDECREF(this_value);
        Py_XDECREF(content);
        Py_DECREF(raw_obj);
        Py_XDECREF(value);
        return NULL;
    }
    PyObject *result = Py_BuildValue("(nO)", n, value != NULL ? value : Py_None);
    Py_XDECREF(value);
    return result;
}

static PyMethodDef methods[] = {
    {"scan", (PyCFunction)(void (*)(void))scan, METH_FASTCALL, scan_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef_Slot slots[] = {
    {0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "proxy._fold_scan",
    .m_doc = "The steady state of proxy.assemble's run of usual chat chunks, in C (see the source's top).",
    .m_size = 0,
    .m_methods = methods,
    .m_slots = slots,
};

PyMODINIT_FUNC
PyInit__fold_scan(void)
{
    return PyModuleDef_Init(&module);
}
