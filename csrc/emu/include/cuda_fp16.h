// Emulator shim for CUDA's cuda_fp16.h: __half and __half2 as 16-bit storage with the conversion
// intrinsics (round to nearest even, as the hardware does). Arithmetic operators exist only when
// the build does not pass -D__CUDA_NO_HALF_OPERATORS__ (torch's build does), exactly as in CUDA.
#pragma once
#include "emu_half.h"
