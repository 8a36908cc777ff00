// The package's single extension module, l2vsd_ext._C.
#include "registry.h"

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "l2vsd_ext C++/CUDA kernels";
  l2vsd::register_build_info(m);
  l2vsd::register_hashgrid(m);
  l2vsd::register_composite(m);
  l2vsd::register_raymarch(m);
  l2vsd::register_lora_linear(m);
  l2vsd::register_attention_jvp(m);
  l2vsd::register_norm_jvp(m);
  l2vsd::register_rasterize(m);
}
