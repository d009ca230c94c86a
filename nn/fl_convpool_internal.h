/*
 * fl_convpool internals exposed for tests: the choice of forward kernel,
 * so that each kernel is checked on a machine that would pick another.
 */
#ifndef FL_CONVPOOL_INTERNAL_H
#define FL_CONVPOOL_INTERNAL_H

#include "nn/fl_convpool.h"

enum {
    FL_CONVPOOL_KERNEL_AUTO = -1,      /* the fastest usable (the default) */
    FL_CONVPOOL_KERNEL_SGEMM = 0,      /* OpenBLAS sgemm over the patches */
    FL_CONVPOOL_KERNEL_ONE_VECTOR = 1, /* patch rows of one vector, 16k channels */
    FL_CONVPOOL_KERNEL_DIRECT = 2      /* AVX-512 register-blocked, 16k channels */
};

/** Test hook: make the block's forward use `kernel` (FL_CONVPOOL_KERNEL_*).
 *  Returns FL_EINVAL, the block unchanged, where the kernel cannot run
 *  this block's geometry or on this CPU. */
int fl_convpool_force_kernel(fl_convpool *cp, int kernel);

#endif
