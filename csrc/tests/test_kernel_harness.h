// A few lines of test harness for the kernel unit tests: CHECK records failures, summary() prints
// a "N passed, M failed" line and returns the exit code.
#pragma once

#include <cmath>
#include <cstdio>

namespace l2vsd_test {

inline int& passed() { static int n = 0; return n; }
inline int& failed() { static int n = 0; return n; }

inline void check(bool ok, const char* expr, const char* file, int line) {
  if (ok) {
    ++passed();
  } else {
    ++failed();
    std::fprintf(stderr, "%s:%d: CHECK failed: %s\n", file, line, expr);
  }
}

inline bool near(double a, double b, double tol) { return std::fabs(a - b) <= tol * (1 + std::fabs(b)); }

inline int summary(const char* name) {
  std::printf("%s: %d passed, %d failed\n", name, passed(), failed());
  return failed() == 0 ? 0 : 1;
}

}  // namespace l2vsd_test

#define CHECK(expr) ::l2vsd_test::check(static_cast<bool>(expr), #expr, __FILE__, __LINE__)
