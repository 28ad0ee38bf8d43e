// The CPU kernels, compiled once for the whole test binary (see mc/cpu/backend.hpp).
#define MC_CPU_BACKEND_IMPLEMENTATION
#include "mc/mc.hpp"
