// Parity harness: every `*_cuda` launcher, executed by the emulator, against its `*_cpu` twin on
// the same random inputs. Device outputs are poisoned (all bytes 0xff: NaN for floating types)
// and framed by guard zones that must come back untouched; inputs that are half precision on the
// device are rounded first and the CPU twin runs in float64 on the rounded values.
//
// Adding a kernel's cases: a file csrc/emu/tests/parity_<op>.cpp (CMake picks it up) with
//   PARITY_CASE("op/what") { ...; ctx.compare("out", device_buffer, reference, tol); }
// See csrc/emu/README.md.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include "cuda_fp16.h"
#include "kernels/common.h"

namespace parity {

using l2vsd::DType;

template <typename T> constexpr DType dtype_of();
template <> constexpr DType dtype_of<float>() { return DType::kFloat32; }
template <> constexpr DType dtype_of<double>() { return DType::kFloat64; }
template <> constexpr DType dtype_of<__half>() { return DType::kFloat16; }
template <> constexpr DType dtype_of<__nv_bfloat16>() { return DType::kBFloat16; }
template <typename T> const char* name_of() {
  if constexpr (std::is_same_v<T, float>) return "f32";
  else if constexpr (std::is_same_v<T, double>) return "f64";
  else if constexpr (std::is_same_v<T, __half>) return "f16";
  else return "bf16";
}

template <typename T> double to_double(T v) {
  if constexpr (std::is_same_v<T, __half>) return __half2float(v);
  else if constexpr (std::is_same_v<T, __nv_bfloat16>) return __bfloat162float(v);
  else return static_cast<double>(v);
}
template <typename T> T from_double(double v) {
  if constexpr (std::is_same_v<T, __half>) return __float2half(static_cast<float>(v));
  else if constexpr (std::is_same_v<T, __nv_bfloat16>) return __float2bfloat16(static_cast<float>(v));
  else return static_cast<T>(v);
}
// Relative tolerance of a result stored in T (accumulation in float or double on both sides).
template <typename T> double tol_of() {
  if constexpr (std::is_same_v<T, double>) return 1e-10;
  else if constexpr (std::is_same_v<T, float>) return 2e-4;
  else if constexpr (std::is_same_v<T, __half>) return 4e-3;
  else return 2e-2;
}

// memcpy that accepts the null data() of empty vectors (UBSan rejects memcpy(p, nullptr, 0)).
inline void copy_bytes(void* dst, const void* src, size_t bytes) {
  if (bytes) std::memcpy(dst, src, bytes);
}

constexpr size_t kGuard = 64;  // elements of guard zone on each side of a device buffer

// A device buffer: n elements between two guard zones filled with a canary pattern.
template <typename T> struct Buffer {
  std::vector<unsigned char> bytes;
  size_t n;
  explicit Buffer(size_t count = 0) : bytes((count + 2 * kGuard) * sizeof(T)), n(count) {
    std::memset(bytes.data(), 0xa5, bytes.size());
    poison();
  }
  T* data() { return reinterpret_cast<T*>(bytes.data()) + kGuard; }
  const T* data() const { return reinterpret_cast<const T*>(bytes.data()) + kGuard; }
  T& operator[](size_t i) { return data()[i]; }
  void poison() { std::memset(data(), 0xff, n * sizeof(T)); }
  bool guards_intact() const {
    const size_t g = kGuard * sizeof(T);
    for (size_t i = 0; i < g; ++i)
      if (bytes[i] != 0xa5 || bytes[bytes.size() - 1 - i] != 0xa5) return false;
    return true;
  }
};

struct Context {
  std::mt19937_64 rng;
  std::string name;
  int comparisons = 0, failures = 0;

  double uniform(double lo, double hi) { return std::uniform_real_distribution<double>(lo, hi)(rng); }
  int64_t integer(int64_t lo, int64_t hi) { return std::uniform_int_distribution<int64_t>(lo, hi)(rng); }

  // Random values in [lo, hi), representable in T; `ref` gets the same values in float64.
  template <typename T> Buffer<T> random(size_t n, double lo, double hi, std::vector<double>* ref) {
    Buffer<T> b(n);
    if (ref) ref->resize(n);
    for (size_t i = 0; i < n; ++i) {
      b[i] = from_double<T>(uniform(lo, hi));
      if (ref) (*ref)[i] = to_double(b[i]);
    }
    return b;
  }

  void fail(const std::string& what) {
    ++failures;
    std::fprintf(stderr, "FAIL %s: %s\n", name.c_str(), what.c_str());
  }

  // |got - want| <= tol * (1 + |want|) elementwise, and the guard zones untouched.
  template <typename T, typename W>
  void compare(const char* what, const Buffer<T>& got, const W* want, size_t n, double tol) {
    ++comparisons;
    if (!got.guards_intact()) return fail(std::string(what) + ": write outside the buffer");
    if (got.n != n) return fail(std::string(what) + ": size mismatch");
    for (size_t i = 0; i < n; ++i) {
      const double g = to_double(got.data()[i]), w = static_cast<double>(want[i]);
      const bool ok = std::isnan(w) ? std::isnan(g) : std::fabs(g - w) <= tol * (1 + std::fabs(w));
      if (!ok) {
        char buf[256];
        std::snprintf(buf, sizeof buf, "%s[%zu] = %.9g, CPU twin %.9g (tol %.1e)", what, i, g, w, tol);
        return fail(buf);
      }
    }
  }
  template <typename T, typename W>
  void compare(const char* what, const Buffer<T>& got, const std::vector<W>& want, double tol) {
    compare(what, got, want.data(), want.size(), tol);
  }
  // For launchers that must throw (or report a launch error) instead of running.
  void expect(bool ok, const char* what) {
    ++comparisons;
    if (!ok) fail(what);
  }
};

template <typename T> std::vector<double> as_double(const Buffer<T>& b) {
  std::vector<double> v(b.n);
  for (size_t i = 0; i < b.n; ++i) v[i] = to_double(b.data()[i]);
  return v;
}
template <typename T> Buffer<T> from_vector(const std::vector<double>& v) {
  Buffer<T> b(v.size());
  for (size_t i = 0; i < v.size(); ++i) b[i] = from_double<T>(v[i]);
  return b;
}

struct Case {
  std::string name;
  std::function<void(Context&)> run;
};
std::vector<Case>& registry();
struct Register {
  Register(const char* name, std::function<void(Context&)> run) { registry().push_back({name, run}); }
};

}  // namespace parity

#define PARITY_CONCAT2(a, b) a##b
#define PARITY_CONCAT(a, b) PARITY_CONCAT2(a, b)
// PARITY_CASE("op/what") { body using `ctx` }
#define PARITY_CASE(NAME)                                                                 \
  static void PARITY_CONCAT(parity_case_, __LINE__)(::parity::Context & ctx);             \
  static ::parity::Register PARITY_CONCAT(parity_register_, __LINE__)(                   \
      NAME, PARITY_CONCAT(parity_case_, __LINE__));                                       \
  static void PARITY_CONCAT(parity_case_, __LINE__)(::parity::Context & ctx)
