/* Placeholder: replaced by the native SKINNY-64/192 bulk cipher. */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
static struct PyModuleDef mod = {PyModuleDef_HEAD_INIT, "_skinny", NULL, -1, NULL};
PyMODINIT_FUNC PyInit__skinny(void) { return PyModule_Create(&mod); }
