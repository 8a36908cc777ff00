// Emulator shim for CUDA's cuda_runtime.h (the build force-includes it, as nvcc does): the
// execution-space keywords, vector types, the runtime API the launchers use, and the device
// intrinsics. Kernels run on the CPU through emu_core.h's scheduler: one fiber per CUDA thread.
#pragma once

#include "emu_core.h"
#include "emu_device.h"
#include "emu_half.h"
