// One registration function per op family; module.cpp calls them all from the one PYBIND11_MODULE.
#pragma once

#include <torch/extension.h>

namespace l2vsd {
void register_build_info(pybind11::module& m);
void register_hashgrid(pybind11::module& m);
void register_composite(pybind11::module& m);
void register_raymarch(pybind11::module& m);
void register_lora_linear(pybind11::module& m);
void register_attention_jvp(pybind11::module& m);
void register_norm_jvp(pybind11::module& m);
void register_rasterize(pybind11::module& m);
}  // namespace l2vsd
