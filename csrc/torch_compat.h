// Compatibility across the torch versions stoicc claims (>= 2.10) and the glibc a manylinux
// wheel may assume. Include it after the torch headers (csrc/ops.cpp, the only torch TU).
#pragma once

#include <torch/headeronly/util/shim_utils.h>  // TORCH_ERROR_CODE_CHECK (torch >= 2.10)
#if __has_include(<torch/csrc/stable/macros.h>)
#include <torch/csrc/stable/macros.h>  // STABLE_TORCH_ERROR_CODE_CHECK (torch >= 2.13)
#endif

// STOICC_ERROR_CODE_CHECK(call): throw if a shim call does not return TORCH_SUCCESS.
// torch >= 2.13's STABLE_TORCH_ERROR_CODE_CHECK adds the error message libtorch recorded (looked
// up at run time, so a build against new headers still loads on torch 2.10); the 2.10-2.12
// headers only have TORCH_ERROR_CODE_CHECK (call, file and line).
#ifdef STABLE_TORCH_ERROR_CODE_CHECK
#define STOICC_ERROR_CODE_CHECK(call) STABLE_TORCH_ERROR_CODE_CHECK(call)
#else
#define STOICC_ERROR_CODE_CHECK(call) TORCH_ERROR_CODE_CHECK(call)
#endif

// manylinux: torch >= 2.13's stable headers look symbols up with dlsym, which glibc 2.34 moved
// into libc under a new version (dlsym@GLIBC_2.34); linked here, the extension would then need
// glibc >= 2.34 (auditwheel: manylinux_2_34). Bind this translation unit's references to the
// original version instead, which every x86-64 glibc has (in libdl before 2.34, as a
// compatibility symbol of libc since), so the wheel keeps torch's manylinux_2_28 floor.
#if defined(__linux__) && defined(__x86_64__) && defined(__GLIBC__)
__asm__(".symver dlsym,dlsym@GLIBC_2.2.5");
#endif
