// Emulator shim for CUDA's cuda_bf16.h: see emu_half.h.
#pragma once
#include "emu_half.h"
