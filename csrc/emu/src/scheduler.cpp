// The emulator's execution model: blocks run one after another; within a block every CUDA thread
// is a fiber with its own stack, run until it reaches a rendezvous (__syncthreads, a warp
// intrinsic) or exits. A rendezvous completes when every thread it names has arrived; the
// checks that a GPU leaves undefined (divergent barriers, masks naming absent or exited lanes,
// lanes that disagree on the intrinsic) abort the launch with a report. Which ready fiber runs
// next follows the order setting: ascending thread index, descending, or random (seeded).
#include "emu_core.h"

#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <cstdarg>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <random>
#include <string>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/asan_interface.h>
#include <sanitizer/common_interface_defs.h>
#define EMU_ASAN 1
#else
#define EMU_ASAN 0
#endif

#if !defined(__x86_64__)
#error "the CUDA emulator's context switch is written for x86-64"
#endif

// Saves the callee-saved registers, MXCSR and the x87 control word on the current stack, stores
// the stack pointer in *save_sp, and resumes the context whose stack pointer is new_sp.
extern "C" void emu_switch_context(void** save_sp, void* new_sp);
asm(R"(
  .text
  .globl emu_switch_context
  .type emu_switch_context, @function
emu_switch_context:
  pushq %rbp
  pushq %rbx
  pushq %r12
  pushq %r13
  pushq %r14
  pushq %r15
  subq $8, %rsp
  stmxcsr (%rsp)
  fnstcw 4(%rsp)
  movq %rsp, (%rdi)
  movq %rsi, %rsp
  ldmxcsr (%rsp)
  fldcw 4(%rsp)
  addq $8, %rsp
  popq %r15
  popq %r14
  popq %r13
  popq %r12
  popq %rbx
  popq %rbp
  ret
  .size emu_switch_context, .-emu_switch_context
  .section .note.GNU-stack,"",@progbits
  .text
)");

namespace emu {

uint3 cur_thread_idx{0, 0, 0}, cur_block_idx{0, 0, 0};
dim3 cur_block_dim, cur_grid_dim;

void set_last_error(cudaError_t err);          // runtime.cpp
size_t dynamic_shared_limit(const void* kernel);  // runtime.cpp: per-kernel attribute or 48 KiB
size_t shared_optin_limit();                    // runtime.cpp

namespace {

constexpr size_t kDefaultSharedLimit = 48 * 1024;

enum class State { kReady, kBarrier, kWarp, kExited };

struct Fiber {
  void* sp = nullptr;
  uint3 idx{};
  int tid = 0;
  State state = State::kReady;
  std::source_location site;
  int barrier_kind = 0, predicate = 0;
  WarpOp op = WarpOp::kSync;
  unsigned mask = 0;
  uint64_t value = 0, result = 0;
  int arg = 0, width = 32;
  void* fake_stack = nullptr;  // AddressSanitizer's per-fiber state
};

struct Warp {
  unsigned exist = 0, alive = 0, waiting = 0;
};

struct Launch {
  const char* name;
  const void* kernel;
  LaunchConfig cfg;
  void (*body)(void*);
  void* ctx;
  int n_threads = 0;
  std::vector<Fiber> fibers;
  std::vector<Warp> warps;
  std::deque<int> ready;
  int current = -1;
  void* scheduler_sp = nullptr;
  int exited = 0, at_barrier = 0;
  bool failed = false;
  std::string message;
  char* dynamic_shared = nullptr;
  size_t static_shared = 0;
  std::unordered_set<void*> static_seen;
};

Launch* g_launch = nullptr;
Order g_order = Order::kForward;
std::mt19937_64 g_rng(1);
uint64_t g_epoch = 0;  // blocks run so far: a shared variable is poisoned once per epoch
std::unordered_map<void*, uint64_t> g_shared_epoch;
int g_faults = 0;
std::string g_last_fault;
uint64_t g_launches = 0, g_switches = 0;

// ---- fiber stacks: reused across blocks and launches, a guard page below each.
size_t stack_bytes() {
  static const size_t bytes = [] {
    const char* kb = std::getenv("L2VSD_EMU_STACK_KB");
    return static_cast<size_t>(kb ? std::atoi(kb) : 256) * 1024;
  }();
  return bytes;
}
std::vector<char*> g_stacks;
bool g_stacks_dirty = false;  // a launch was abandoned mid-block: ASan shadow left poisoned

char* stack_for(int i) {
  while (static_cast<int>(g_stacks.size()) <= i) {
    const size_t page = static_cast<size_t>(sysconf(_SC_PAGESIZE));
    void* mem = mmap(nullptr, stack_bytes() + page, PROT_READ | PROT_WRITE,
                     MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (mem == MAP_FAILED) {
      std::fprintf(stderr, "emu: cannot map a fiber stack\n");
      std::abort();
    }
    mprotect(mem, page, PROT_NONE);
    g_stacks.push_back(static_cast<char*>(mem) + page);
  }
  return g_stacks[i];
}

#if EMU_ASAN
const void* g_main_stack_bottom = nullptr;
size_t g_main_stack_size = 0;
#endif

std::string site_text(const std::source_location& s) {
  const char* file = s.file_name();
  const char* slash = std::strrchr(file, '/');
  return std::string(slash ? slash + 1 : file) + ":" + std::to_string(s.line());
}

const char* op_name(WarpOp op) {
  switch (op) {
    case WarpOp::kShflIdx: return "__shfl_sync";
    case WarpOp::kShflUp: return "__shfl_up_sync";
    case WarpOp::kShflDown: return "__shfl_down_sync";
    case WarpOp::kShflXor: return "__shfl_xor_sync";
    case WarpOp::kBallot: return "__ballot_sync";
    case WarpOp::kAny: return "__any_sync";
    case WarpOp::kAll: return "__all_sync";
    case WarpOp::kSync: return "__syncwarp";
    case WarpOp::kReduceAdd: return "__reduce_add_sync";
    case WarpOp::kReduceMin: return "__reduce_min_sync";
    case WarpOp::kReduceMax: return "__reduce_max_sync";
    case WarpOp::kMatchAny: return "__match_any_sync";
  }
  return "?";
}

std::string format(const char* fmt, ...) {
  char buf[1024];
  va_list ap;
  va_start(ap, fmt);
  std::vsnprintf(buf, sizeof buf, fmt, ap);
  va_end(ap);
  return buf;
}

std::string where(const Launch& L, const Fiber& f) {
  return format("kernel %s, block (%u,%u,%u), thread (%u,%u,%u)", L.name, cur_block_idx.x,
                cur_block_idx.y, cur_block_idx.z, f.idx.x, f.idx.y, f.idx.z);
}

// Switches from the running fiber back to the scheduler. `final`: the fiber never resumes.
void yield_to_scheduler(bool final = false) {
  Launch& L = *g_launch;
  Fiber& f = L.fibers[L.current];
#if EMU_ASAN
  __sanitizer_start_switch_fiber(final ? nullptr : &f.fake_stack, g_main_stack_bottom,
                                 g_main_stack_size);
#else
  (void)final;
#endif
  emu_switch_context(&f.sp, L.scheduler_sp);
#if EMU_ASAN
  __sanitizer_finish_switch_fiber(f.fake_stack, &g_main_stack_bottom, &g_main_stack_size);
#endif
}

// Aborts the launch from inside a fiber: records the report and never resumes this fiber.
[[noreturn]] void fail(const std::string& what) {
  Launch& L = *g_launch;
  if (!L.failed) {
    L.failed = true;
    L.message = what + " [" + where(L, L.fibers[L.current]) + "]";
  }
  yield_to_scheduler(true);
  std::abort();  // unreachable: an aborted fiber is never switched to again
}

void make_ready(int tid) {
  Launch& L = *g_launch;
  L.fibers[tid].state = State::kReady;
  L.ready.push_back(tid);
}

// Releases tids[0..n) (ascending) in the order's sequence.
void release(const int* tids, int n) {
  if (g_order == Order::kReverse) {
    for (int k = n - 1; k >= 0; --k) make_ready(tids[k]);
  } else {
    for (int k = 0; k < n; ++k) make_ready(tids[k]);
  }
}

// Releases every thread of the block.
void release_all(int n_threads) {
  Launch& L = *g_launch;
  if (g_order == Order::kReverse) {
    for (int t = n_threads - 1; t >= 0; --t) L.fibers[t].state = State::kReady, L.ready.push_back(t);
  } else {
    for (int t = 0; t < n_threads; ++t) L.fibers[t].state = State::kReady, L.ready.push_back(t);
  }
}

[[noreturn]] void fiber_main() {
  Launch& L = *g_launch;
#if EMU_ASAN
  __sanitizer_finish_switch_fiber(nullptr, &g_main_stack_bottom, &g_main_stack_size);
#endif
  L.body(L.ctx);
  // Thread exit: lanes still waiting for this one, or a barrier others wait at, is divergence.
  Fiber& f = L.fibers[L.current];
  Warp& w = L.warps[f.tid / 32];
  const unsigned bit = 1u << (f.tid % 32);
  f.state = State::kExited;
  ++L.exited;
  w.alive &= ~bit;
  for (int lane = 0; lane < 32; ++lane) {
    if (!(w.waiting >> lane & 1u)) continue;
    const Fiber& g = L.fibers[(f.tid / 32) * 32 + lane];
    if (g.mask & bit)
      fail(format("thread exited while lane %d waits for it in %s (mask 0x%08x) at %s", lane,
                  op_name(g.op), g.mask, site_text(g.site).c_str()));
  }
  if (L.at_barrier > 0) {
    const Fiber* waiting = nullptr;
    for (const Fiber& g : L.fibers)
      if (g.state == State::kBarrier) { waiting = &g; break; }
    fail(format("divergent __syncthreads: thread exited while %d threads wait at %s", L.at_barrier,
                site_text(waiting->site).c_str()));
  }
  yield_to_scheduler(true);
  std::abort();
}

void start_fiber(Fiber& f, char* stack) {
#if EMU_ASAN
  if (g_stacks_dirty) __asan_unpoison_memory_region(stack, stack_bytes());
#endif
  // Initial frame popped by emu_switch_context: control words, r15..r12, rbx, rbp, then the
  // "return address" fiber_main, entered with the stack aligned as after a call.
  uint64_t* top = reinterpret_cast<uint64_t*>(stack + stack_bytes() - 16);
  top[1] = 0;
  top[0] = reinterpret_cast<uint64_t>(&fiber_main);
  for (int k = 1; k <= 6; ++k) top[-k] = 0;
  top[-7] = 0x1f80ull | (0x037full << 32);  // MXCSR default, x87 control word default
  f.sp = top - 7;
  f.fake_stack = nullptr;
}

void run_fiber(int tid) {
  Launch& L = *g_launch;
  Fiber& f = L.fibers[tid];
  L.current = tid;
  cur_thread_idx = f.idx;
  ++g_switches;
#if EMU_ASAN
  void* scheduler_fake = nullptr;
  __sanitizer_start_switch_fiber(&scheduler_fake, stack_for(tid), stack_bytes());
#endif
  emu_switch_context(&L.scheduler_sp, f.sp);
#if EMU_ASAN
  __sanitizer_finish_switch_fiber(scheduler_fake, nullptr, nullptr);
  // A fiber that will not resume leaves its live frames (fiber_main at least) poisoned: clear
  // them, or the next fiber on this stack trips over their redzones.
  if (f.state == State::kExited || L.failed) {
    char* top = stack_for(tid) + stack_bytes();
    __asan_unpoison_memory_region(f.sp, static_cast<size_t>(top - static_cast<char*>(f.sp)));
  }
#endif
  L.current = -1;
}

int pick_ready() {
  Launch& L = *g_launch;
  if (g_order == Order::kRandom) {
    std::uniform_int_distribution<size_t> pick(0, L.ready.size() - 1);
    const size_t k = pick(g_rng);
    std::swap(L.ready[k], L.ready.back());
    const int t = L.ready.back();
    L.ready.pop_back();
    return t;
  }
  const int t = L.ready.front();
  L.ready.pop_front();
  return t;
}

std::string deadlock_report(const Launch& L) {
  std::string text = "deadlock: no thread can proceed;";
  int shown = 0;
  for (const Fiber& f : L.fibers) {
    if (f.state == State::kExited || f.state == State::kReady) continue;
    if (shown++ == 4) { text += " ..."; break; }
    if (f.state == State::kBarrier)
      text += format(" thread %d waits at __syncthreads %s;", f.tid, site_text(f.site).c_str());
    else
      text += format(" thread %d waits in %s (mask 0x%08x) at %s;", f.tid, op_name(f.op), f.mask,
                     site_text(f.site).c_str());
  }
  return text + format(" %d of %d threads exited", L.exited, L.n_threads);
}

void run_block(Launch& L, uint64_t block) {
  const dim3 g = L.cfg.grid, b = L.cfg.block;
  cur_block_idx = {static_cast<unsigned>(block % g.x), static_cast<unsigned>(block / g.x % g.y),
                   static_cast<unsigned>(block / g.x / g.y)};
  ++g_epoch;
  if (L.cfg.shared_bytes) std::memset(L.dynamic_shared, 0xff, L.cfg.shared_bytes);
  L.exited = L.at_barrier = 0;
  L.ready.clear();
  for (Warp& w : L.warps) w.waiting = 0, w.alive = w.exist;
  for (int t = 0; t < L.n_threads; ++t) {
    Fiber& f = L.fibers[t];
    f.tid = t;
    f.idx = {t % b.x, t / b.x % b.y, t / (b.x * b.y)};
    f.state = State::kReady;
    start_fiber(f, stack_for(t));
  }
  g_stacks_dirty = false;
  release_all(L.n_threads);
  while (!L.ready.empty() && !L.failed) run_fiber(pick_ready());
  if (!L.failed && L.exited < L.n_threads) {
    L.failed = true;
    L.message = deadlock_report(L) + format(" [kernel %s, block (%u,%u,%u)]", L.name,
                                            cur_block_idx.x, cur_block_idx.y, cur_block_idx.z);
  }
  if (L.failed) g_stacks_dirty = true;
}

Fiber& current_fiber(const char* what) {
  if (!g_launch || g_launch->current < 0) {
    std::fprintf(stderr, "emu: %s called outside a kernel\n", what);
    std::abort();
  }
  return g_launch->fibers[g_launch->current];
}

}  // namespace

// ---- launch
cudaError_t validate_launch(const void* kernel, const LaunchConfig& c) {
  const dim3 g = c.grid, b = c.block;
  if (g.x == 0 || g.y == 0 || g.z == 0 || b.x == 0 || b.y == 0 || b.z == 0)
    return cudaErrorInvalidConfiguration;
  if (g.x > 0x7fffffffu || g.y > 65535u || g.z > 65535u) return cudaErrorInvalidConfiguration;
  if (b.x > 1024u || b.y > 1024u || b.z > 64u ||
      static_cast<uint64_t>(b.x) * b.y * b.z > 1024u)
    return cudaErrorInvalidConfiguration;
  if (c.shared_bytes > dynamic_shared_limit(kernel)) return cudaErrorInvalidValue;
  return cudaSuccess;
}

void run_launch(const char* name, const void* kernel, const LaunchConfig& cfg,
                void (*body)(void*), void* ctx) {
  ++g_launches;
  if (g_launch) {
    std::fprintf(stderr, "emu: kernel %s launched from inside a kernel\n", name);
    std::abort();
  }
  const cudaError_t err = validate_launch(kernel, cfg);
  if (err != cudaSuccess) {
    set_last_error(err);
    return;
  }
  Launch L;
  L.name = name;
  L.kernel = kernel;
  L.cfg = cfg;
  L.body = body;
  L.ctx = ctx;
  L.n_threads = static_cast<int>(cfg.block.x * cfg.block.y * cfg.block.z);
  L.fibers.resize(L.n_threads);
  L.warps.resize((L.n_threads + 31) / 32);
  for (int t = 0; t < L.n_threads; ++t) L.warps[t / 32].exist |= 1u << (t % 32);
  // Exactly the requested size, so that AddressSanitizer sees reads past the end.
  std::vector<char> dynamic(cfg.shared_bytes ? cfg.shared_bytes : 1);
  L.dynamic_shared = cfg.shared_bytes ? dynamic.data() : nullptr;
  cur_block_dim = cfg.block;
  cur_grid_dim = cfg.grid;
  const uint64_t n_blocks = static_cast<uint64_t>(cfg.grid.x) * cfg.grid.y * cfg.grid.z;
  std::vector<uint64_t> blocks;
  if (g_order == Order::kRandom) {
    blocks.resize(n_blocks);
    for (uint64_t k = 0; k < n_blocks; ++k) blocks[k] = k;
    std::shuffle(blocks.begin(), blocks.end(), g_rng);
  }
  g_launch = &L;
  for (uint64_t k = 0; k < n_blocks && !L.failed; ++k) {
    const uint64_t block = g_order == Order::kForward   ? k
                           : g_order == Order::kReverse ? n_blocks - 1 - k
                                                        : blocks[k];
    run_block(L, block);
  }
  g_launch = nullptr;
  if (L.failed) {
    ++g_faults;
    g_last_fault = L.message;
    if (!std::getenv("L2VSD_EMU_QUIET")) std::fprintf(stderr, "emu: %s\n", L.message.c_str());
    set_last_error(cudaErrorLaunchFailure);
  }
}

// ---- shared memory
void shared_declared(void* address, size_t bytes) {
  if (!g_launch) return;
  Launch& L = *g_launch;
  uint64_t& epoch = g_shared_epoch[address];
  if (epoch != g_epoch) {
    std::memset(address, 0xff, bytes);
    epoch = g_epoch;
  }
  if (L.static_seen.insert(address).second) {
    L.static_shared += bytes;
    const size_t optin = dynamic_shared_limit(L.kernel) > kDefaultSharedLimit
                             ? shared_optin_limit() : kDefaultSharedLimit;
    if (L.static_shared > kDefaultSharedLimit || L.static_shared + L.cfg.shared_bytes > optin)
      fail(format("too much shared memory: %zu bytes static + %zu dynamic, limit %zu",
                  L.static_shared, L.cfg.shared_bytes, optin));
  }
}

void* dynamic_shared_bytes() {
  current_fiber("extern __shared__");
  return g_launch->dynamic_shared;
}

// ---- rendezvous
int block_barrier(int kind, int predicate, const std::source_location& site) {
  Launch& L = *g_launch;
  Fiber& f = current_fiber("__syncthreads");
  f.state = State::kBarrier;
  f.site = site;
  f.barrier_kind = kind;
  f.predicate = predicate;
  ++L.at_barrier;
  if (L.exited > 0)
    fail(format("divergent __syncthreads at %s: %d threads of the block have exited",
                site_text(site).c_str(), L.exited));
  if (L.at_barrier == L.n_threads) {
    int count = 0;
    for (const Fiber& g : L.fibers) {
      if (g.site.line() != site.line() || g.site.column() != site.column() ||
          std::strcmp(g.site.file_name(), site.file_name()) != 0 || g.barrier_kind != kind)
        fail(format("divergent __syncthreads: thread %d waits at %s, thread %d at %s", f.tid,
                    site_text(site).c_str(), g.tid, site_text(g.site).c_str()));
      count += g.predicate;
    }
    const int result = kind == 1 ? count : kind == 2 ? (count == L.n_threads) : (count > 0);
    for (Fiber& g : L.fibers) g.result = static_cast<uint64_t>(result);
    L.at_barrier = 0;
    release_all(L.n_threads);
  }
  yield_to_scheduler();
  return static_cast<int>(f.result);
}

namespace {

// All lanes of `mask` have arrived: check that they agree, compute each lane's result, release.
void complete_warp(Launch& L, int warp, unsigned mask, const Fiber& f) {
  Fiber* lanes = &L.fibers[warp * 32];
  for (int l = 0; l < 32; ++l) {
    if (!(mask >> l & 1u)) continue;
    const Fiber& g = lanes[l];
    if (g.mask != mask || g.op != f.op || (f.op >= WarpOp::kShflIdx && f.op <= WarpOp::kShflXor &&
                                           g.width != f.width))
      fail(format("lanes disagree: lane %d in %s (mask 0x%08x) at %s, lane %d in %s (mask 0x%08x) "
                  "at %s", f.tid % 32, op_name(f.op), f.mask, site_text(f.site).c_str(), l,
                  op_name(g.op), g.mask, site_text(g.site).c_str()));
  }
  uint64_t ballot = 0, any = 0, all = 1;
  uint64_t sum = 0;  // wraps like the hardware's 32-bit add (the caller truncates)
  int64_t lo = 0, hi = 0;
  bool first = true;
  for (int l = 0; l < 32; ++l) {
    if (!(mask >> l & 1u)) continue;
    const Fiber& g = lanes[l];
    ballot |= (g.value & 1u) << l;
    any |= g.value & 1u;
    all &= g.value & 1u;
    const int64_t v = static_cast<int64_t>(g.value);
    const bool is_signed = g.arg != 0;
    sum += g.value;
    if (first || (is_signed ? v < lo : static_cast<uint64_t>(v) < static_cast<uint64_t>(lo))) lo = v;
    if (first || (is_signed ? v > hi : static_cast<uint64_t>(v) > static_cast<uint64_t>(hi))) hi = v;
    first = false;
  }
  int tids[32], n_tids = 0;
  for (int l = 0; l < 32; ++l) {
    if (!(mask >> l & 1u)) continue;
    Fiber& g = lanes[l];
    const int width = g.width, seg = l & ~(width - 1), pos = l & (width - 1);
    int src = l;
    switch (g.op) {
      case WarpOp::kShflIdx: src = seg + (g.arg & (width - 1)); break;
      case WarpOp::kShflUp: src = pos >= g.arg ? l - g.arg : l; break;
      case WarpOp::kShflDown: src = pos + g.arg < width ? l + g.arg : l; break;
      case WarpOp::kShflXor: {
        const int x = l ^ g.arg;
        src = (x & ~(width - 1)) == seg && x < 32 ? x : l;
        break;
      }
      default: break;
    }
    switch (g.op) {
      case WarpOp::kShflIdx: case WarpOp::kShflUp: case WarpOp::kShflDown: case WarpOp::kShflXor:
        if (!(mask >> src & 1u))
          fail(format("%s at %s: lane %d reads lane %d, which is not in the mask 0x%08x",
                      op_name(g.op), site_text(g.site).c_str(), l, src, mask));
        g.result = lanes[src].value;
        break;
      case WarpOp::kBallot: g.result = ballot; break;
      case WarpOp::kAny: g.result = any; break;
      case WarpOp::kAll: g.result = all; break;
      case WarpOp::kSync: g.result = 0; break;
      case WarpOp::kReduceAdd: g.result = sum; break;
      case WarpOp::kReduceMin: g.result = static_cast<uint64_t>(lo); break;
      case WarpOp::kReduceMax: g.result = static_cast<uint64_t>(hi); break;
      case WarpOp::kMatchAny: {
        uint64_t same = 0;
        for (int k = 0; k < 32; ++k)
          if ((mask >> k & 1u) && lanes[k].value == g.value) same |= 1ull << k;
        g.result = same;
        break;
      }
    }
    tids[n_tids++] = warp * 32 + l;
  }
  L.warps[warp].waiting &= ~mask;
  release(tids, n_tids);
}

}  // namespace

uint64_t warp_op(WarpOp op, unsigned mask, uint64_t value, int arg, int width,
                 const std::source_location& site) {
  Launch& L = *g_launch;
  Fiber& f = current_fiber(op_name(op));
  const int warp = f.tid / 32, lane = f.tid % 32;
  Warp& w = L.warps[warp];
  f.state = State::kWarp;
  f.op = op;
  f.mask = mask;
  f.value = value;
  f.arg = arg;
  f.width = width;
  f.site = site;
  if (!(mask >> lane & 1u) || (mask & ~w.alive) || width < 1 || width > 32 || (width & (width - 1))) {
    const std::string at = std::string(op_name(op)) + " at " + site_text(site);
    if (!(mask >> lane & 1u))
      fail(format("%s: mask 0x%08x does not include the calling lane %d", at.c_str(), mask, lane));
    if (mask & ~w.exist)
      fail(format("%s: mask 0x%08x names lanes that do not exist (this warp has 0x%08x)",
                  at.c_str(), mask, w.exist));
    if (mask & ~w.alive)
      fail(format("%s: mask 0x%08x names lanes that have exited (alive: 0x%08x)", at.c_str(),
                  mask, w.alive));
    fail(format("%s: width %d is not a power of two in [1, 32]", at.c_str(), width));
  }
  w.waiting |= 1u << lane;
  if ((w.waiting & mask) == mask) complete_warp(L, warp, mask, f);
  yield_to_scheduler();
  return f.result;
}

unsigned active_mask() {
  const Fiber& f = current_fiber("__activemask");
  return g_launch->warps[f.tid / 32].alive;
}
int lane_id() { return current_fiber("lane id").tid % 32; }

// ---- settings and counters
void set_order(Order o, uint64_t seed) {
  g_order = o;
  g_rng.seed(seed);
}
Order order() { return g_order; }
const char* order_name(Order o) {
  return o == Order::kForward ? "forward" : o == Order::kReverse ? "reverse" : "random";
}
bool parse_order(const char* text, Order* out) {
  for (Order o : {Order::kForward, Order::kReverse, Order::kRandom})
    if (std::strcmp(text, order_name(o)) == 0) { *out = o; return true; }
  return false;
}
int fault_count() { return g_faults; }
const char* last_fault() { return g_last_fault.c_str(); }
uint64_t launch_count() { return g_launches; }
uint64_t switch_count() { return g_switches; }

namespace {
// L2VSD_EMU_ORDER / L2VSD_EMU_SEED set the order for any program linking the emulator.
struct OrderFromEnvironment {
  OrderFromEnvironment() {
    Order o = Order::kForward;
    const char* text = std::getenv("L2VSD_EMU_ORDER");
    if (text && !parse_order(text, &o)) {
      std::fprintf(stderr, "emu: L2VSD_EMU_ORDER must be forward, reverse or random\n");
      std::exit(2);
    }
    const char* seed = std::getenv("L2VSD_EMU_SEED");
    set_order(o, seed ? std::strtoull(seed, nullptr, 10) : 1);
  }
} g_order_from_environment;
}  // namespace

}  // namespace emu
