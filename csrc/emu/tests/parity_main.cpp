// Runs every registered parity case once in the thread order given by --order (or
// L2VSD_EMU_ORDER); prints one line per failure and a summary; exit code 1 on any failure.
// Usage: emu_parity [--order forward|reverse|random] [--seed N] [--filter SUBSTRING]
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>

#include "emu_core.h"
#include "parity.h"

namespace parity {
std::vector<Case>& registry() {
  static std::vector<Case> cases;
  return cases;
}
}  // namespace parity

int main(int argc, char** argv) {
  emu::Order order = emu::order();
  uint64_t seed = 1;
  const char* filter = nullptr;
  for (int i = 1; i < argc; ++i) {
    if (!std::strcmp(argv[i], "--order") && i + 1 < argc) {
      if (!emu::parse_order(argv[++i], &order)) {
        std::fprintf(stderr, "emu_parity: --order must be forward, reverse or random\n");
        return 2;
      }
    } else if (!std::strcmp(argv[i], "--seed") && i + 1 < argc) {
      seed = std::strtoull(argv[++i], nullptr, 10);
    } else if (!std::strcmp(argv[i], "--filter") && i + 1 < argc) {
      filter = argv[++i];
    } else {
      std::fprintf(stderr, "usage: emu_parity [--order forward|reverse|random] [--seed N] [--filter S]\n");
      return 2;
    }
  }
  emu::set_order(order, seed);
  const auto start = std::chrono::steady_clock::now();
  int cases = 0, comparisons = 0, failures = 0;
  for (const parity::Case& c : parity::registry()) {
    if (filter && !std::strstr(c.name.c_str(), filter)) continue;
    parity::Context ctx;
    ctx.rng.seed(seed * 1000003u + std::hash<std::string>()(c.name));
    ctx.name = c.name;
    const int faults_before = emu::fault_count();
    try {
      c.run(ctx);
    } catch (const std::exception& e) {
      ctx.fail(std::string("threw: ") + e.what());
    }
    if (emu::fault_count() != faults_before) ctx.fail(std::string("emulator report: ") + emu::last_fault());
    if (cudaGetLastError() != cudaSuccess) ctx.fail("a CUDA error was left pending");
    ++cases;
    comparisons += ctx.comparisons;
    failures += ctx.failures;
  }
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  std::printf("emu_parity (%s order, seed %llu): %d cases, %d comparisons, %d failures, "
              "%llu launches, %llu fiber switches, %.1f s\n",
              emu::order_name(order), static_cast<unsigned long long>(seed), cases, comparisons,
              failures, static_cast<unsigned long long>(emu::launch_count()),
              static_cast<unsigned long long>(emu::switch_count()), seconds);
  if (cases == 0) {
    std::fprintf(stderr, "emu_parity: no case matched\n");
    return 1;
  }
  return failures == 0 ? 0 : 1;
}
