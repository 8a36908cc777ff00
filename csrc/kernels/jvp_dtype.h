// Element types of the JVP-engine kernels (lora_linear, attention_jvp, norm_jvp). common.h's DType
// has no bfloat16, which the engine needs on CUDA, so these ops share this wider enum.
#pragma once

namespace l2vsd {
enum class JvpDType { kFloat32, kFloat64, kFloat16, kBFloat16 };
}  // namespace l2vsd
