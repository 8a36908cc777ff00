// device_check: the probe reports the emulated device runnable, with the lowest built
// architecture's compute capability, and leaves no error pending.
#include "kernels/device_check/device_check.h"
#include "parity.h"

#ifndef EMU_ARCH
#define EMU_ARCH 800
#endif

PARITY_CASE("device_check/probe") {
  const auto report = l2vsd::device_check::probe_device(0);
  ctx.expect(report.runnable, "probe_device(0) must be runnable");
  ctx.expect(report.major == EMU_ARCH / 100 && report.minor == EMU_ARCH / 10 % 10,
             "probe_device(0) must report the emulated compute capability");
}
