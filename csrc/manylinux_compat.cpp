// Keeps the extension's glibc floor at torch's (manylinux_2_28), so that a wheel built on a
// newer system installs wherever torch's own wheels do (checked by `auditwheel show`, see
// scripts/build_wheel.sh). Only <features.h> (for __GLIBC__): a declaration from
// <sys/single_threaded.h> would clash with the definition below.
//
// GCC >= 11's libstdc++ headers read glibc's `__libc_single_threaded` (GLIBC_2.32) to skip the
// atomic reference counting of shared_ptr, std::string etc. in single-threaded processes. This
// hidden definition satisfies those references inside the extension instead: it says "maybe
// threaded", so the inline code always takes the atomic path, which is correct everywhere and
// costs nothing that matters here (the extension does no refcounting in hot loops).
// The other newer-glibc symbol, dlsym@GLIBC_2.34 from torch's stable headers, is bound to its
// old version in csrc/torch_compat.h, in the translation unit that references it.
#include <features.h>

#if defined(__linux__) && defined(__GLIBC__)
extern "C" {
__attribute__((visibility("hidden"))) char __libc_single_threaded = 0;
}
#endif
