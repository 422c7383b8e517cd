#ifndef C_TIDINGS_EPOLL_H
#define C_TIDINGS_EPOLL_H

// The Glibc module does not export epoll; the load tool's stream loops (TidingsBench's
// StreamLoop) call it directly.
#include <sys/epoll.h>

#endif
