// Run-time choice of instruction set for the hot CPU kernels. The extension is built without
// -march flags (it must load on any x86-64), so those kernels are compiled once per instruction
// set with target attributes (bodies always_inline'd into each entry point) and picked at run
// time. CPU-only header: no CUDA, no torch.
#pragma once

#include <cstdlib>
#include <string_view>

namespace l2vsd {
namespace cpu_isa {

enum class Isa { kAvx512, kAvx2, kBase };

inline Isa detect() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512dq") &&
      __builtin_cpu_supports("avx512vl"))
    return Isa::kAvx512;
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return Isa::kAvx2;
#endif
  return Isa::kBase;
}

// L2VSD_CPU_ISA=avx2 or base caps the choice (tests run every build on one machine); a value
// above what the CPU supports, or any other value, leaves the detected one.
inline Isa capped_by_environment(Isa detected) {
  const char* want = std::getenv("L2VSD_CPU_ISA");
  if (!want) return detected;
  const std::string_view w(want);
  if (w == "base") return Isa::kBase;
  if (w == "avx2" && detected == Isa::kAvx512) return Isa::kAvx2;
  return detected;
}

// Detected once per process.
inline Isa current() {
  static const Isa isa = capped_by_environment(detect());
  return isa;
}

// The build of an entry point (one per instruction set) that `isa` runs.
template <typename Fn>
inline Fn pick(Isa isa, Fn avx512, Fn avx2, Fn base) {
  return isa == Isa::kAvx512 ? avx512 : isa == Isa::kAvx2 ? avx2 : base;
}

}  // namespace cpu_isa
}  // namespace l2vsd

#if defined(__x86_64__) || defined(__i386__)
#define L2VSD_TARGET_AVX512 __attribute__((target("avx512f,avx512dq,avx512vl,avx2,fma")))
#define L2VSD_TARGET_AVX2 __attribute__((target("avx2,fma")))
#else
#define L2VSD_TARGET_AVX512
#define L2VSD_TARGET_AVX2
#endif
