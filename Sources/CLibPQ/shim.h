#ifndef TIDINGS_CLIBPQ_SHIM_H
#define TIDINGS_CLIBPQ_SHIM_H
#include <libpq-fe.h>
#endif
