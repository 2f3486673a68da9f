// Runs kernels written in ringsam's CUDA C subset as plain C++ on the CPU (tests only).
//
// The subset: 1-D grids and blocks; `__global__` functions of pointers and scalars;
// `__shared__` arrays; `__syncthreads()`; <cmath>'s float functions; `#pragma unroll` (ignored). No warp intrinsics, no
// atomics, no dynamic shared memory. Emulated so:
// - blocks run one after another on the launching thread; a block's threads are fibers, so `__syncthreads()` is a real barrier: a thread that reaches it switches back
//   to the block's scheduler, which resumes the next thread, and a phase ends when every thread
//   has reached the barrier or its end. A reduction's tree runs as it would on a GPU.
// - A kernel whose first launch reached no barrier runs its later launches as plain loops over
//   the threads (most kernels are elementwise). One that then reaches a barrier aborts, saying
//   so: the emulator cannot suspend a thread it did not start as a fiber.
// - `__shared__` is `static`: one array shared by the block's threads (blocks never overlap);
// - threadIdx/blockIdx are set per thread, blockDim/gridDim per launch; launches are
//   serialized, as on one stream.
// Why fibers and not OS threads: a thread per GPU thread, meeting at std::barrier, spent most of
// a test's time spawning threads and yielding at barriers (a SAM step of a tiny CNN on 16 images
// took 5 s on two cores).
// Compiled with -ffp-contract=off, as the kernels are with --fmad=false.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <mutex>
#include <unordered_map>
#include <vector>

#include <ucontext.h>

struct dim3 {
    unsigned x, y, z;
    dim3(unsigned x_ = 1, unsigned y_ = 1, unsigned z_ = 1) : x(x_), y(y_), z(z_) {}
};

namespace emu {
inline dim3 thread_idx, block_idx, block_dim, grid_dim;

// Every launch holds this: one at a time, as on one stream (blockDim/gridDim, the fibers and
// the `__shared__` arrays are process-wide here, and tests launch from several threads).
inline std::mutex device;

// A block's threads as fibers (used only under `device`). On x86-64 a fiber switch is six
// pushes, a stack swap and six pops (`emu_switch`); glibc's swapcontext also saves the signal
// mask by a system call, which made switching most of a test's time. Elsewhere, ucontext.
constexpr std::size_t FIBER_STACK = 256 * 1024;
struct Fiber;
inline Fiber* running = nullptr;  // the fiber running now; null outside fibers
inline bool reached_barrier = false;
inline void (*thread_body)(void*) = nullptr;
inline void* thread_arg = nullptr;
inline std::vector<std::unique_ptr<char[]>> stacks;

#if defined(__x86_64__)
// emu_switch(&from_sp, to_sp): saves the callee-saved registers on the current stack, stores
// the stack pointer in *from_sp, and resumes the stack at to_sp (popping its registers).
extern "C" void emu_switch(void** from_sp, void* to_sp);
asm(R"(
    .pushsection .text
    .globl emu_switch
    .type emu_switch, @function
emu_switch:
    pushq %rbp
    pushq %rbx
    pushq %r12
    pushq %r13
    pushq %r14
    pushq %r15
    movq %rsp, (%rdi)
    movq %rsi, %rsp
    popq %r15
    popq %r14
    popq %r13
    popq %r12
    popq %rbx
    popq %rbp
    ret
    .size emu_switch, .-emu_switch
    .popsection
)");

struct Fiber {
    void* sp;
    bool done;
};
inline void* scheduler_sp = nullptr;

[[noreturn]] inline void fiber_main() {
    thread_body(thread_arg);
    running->done = true;
    void* unused;
    emu_switch(&unused, scheduler_sp);  // never resumed
    std::abort();
}

// A fresh fiber on `stack`: its first resume "returns" into fiber_main with the stack aligned
// as a call leaves it.
inline void start_fiber(Fiber& f, char* stack) {
    auto top = (reinterpret_cast<std::uintptr_t>(stack) + FIBER_STACK) & ~std::uintptr_t(15);
    auto* slot = reinterpret_cast<void**>(top - 16);  // 16-aligned: fiber_main's return address
    slot[0] = reinterpret_cast<void*>(&fiber_main);
    for (int r = 1; r <= 6; ++r) slot[-r] = nullptr;  // rbp, rbx, r12–r15
    f.sp = slot - 6;
    f.done = false;
}
inline void resume(Fiber& f) { emu_switch(&scheduler_sp, f.sp); }
inline void suspend(Fiber& f) { emu_switch(&f.sp, scheduler_sp); }
#else
struct Fiber {
    ucontext_t ctx;
    bool done;
};
inline ucontext_t scheduler;

inline void fiber_main() {
    thread_body(thread_arg);
    running->done = true;  // returning continues at uc_link: the scheduler
}

inline void start_fiber(Fiber& f, char* stack) {
    getcontext(&f.ctx);
    f.ctx.uc_stack.ss_sp = stack;
    f.ctx.uc_stack.ss_size = FIBER_STACK;
    f.ctx.uc_link = &scheduler;
    f.done = false;
    makecontext(&f.ctx, fiber_main, 0);
}
inline void resume(Fiber& f) { swapcontext(&scheduler, &f.ctx); }
inline void suspend(Fiber& f) { swapcontext(&f.ctx, &scheduler); }
#endif

inline std::vector<Fiber> fibers;

// `__syncthreads()`: back to the scheduler, which resumes this thread once every thread of the
// block has arrived.
inline void barrier() {
    if (running == nullptr) {
        std::fprintf(stderr, "emulated kernel: __syncthreads() in a kernel whose first launch reached none\n");
        std::abort();
    }
    reached_barrier = true;
    suspend(*running);
}

// Runs `body` as each of the block's `block` threads, phase by phase (see above).
template <typename F>
void run_block_as_fibers(unsigned block, F& body) {
    thread_body = [](void* f) { (*static_cast<F*>(f))(); };
    thread_arg = &body;
    while (stacks.size() < block) stacks.emplace_back(new char[FIBER_STACK]);
    fibers.resize(block);
    for (unsigned t = 0; t < block; ++t) start_fiber(fibers[t], stacks[t].get());
    for (unsigned left = block; left > 0;) {
        for (unsigned t = 0; t < block; ++t) {
            if (fibers[t].done) continue;
            thread_idx = dim3(t);
            running = &fibers[t];
            resume(fibers[t]);
            if (fibers[t].done) --left;
        }
    }
    running = nullptr;
}

// Runs kernel<<<grid, block>>>(args...) and returns when every block has finished.
template <typename... Params, typename... Args>
void launch(void (*kernel)(Params...), unsigned grid, unsigned block, Args... args) {
    std::lock_guard<std::mutex> one_at_a_time(device);
    static std::unordered_map<const void*, bool> uses_barrier;  // by kernel, from its first launch
    grid_dim = dim3(grid);
    block_dim = dim3(block);
    auto known = uses_barrier.find(reinterpret_cast<const void*>(kernel));
    auto body = [&] { kernel(args...); };
    if (known != uses_barrier.end() && !known->second) {
        for (unsigned b = 0; b < grid; ++b) {
            block_idx = dim3(b);
            for (unsigned t = 0; t < block; ++t) {
                thread_idx = dim3(t);
                body();
            }
        }
        return;
    }
    reached_barrier = false;
    for (unsigned b = 0; b < grid; ++b) {
        block_idx = dim3(b);
        run_block_as_fibers(block, body);
    }
    if (grid > 0) uses_barrier[reinterpret_cast<const void*>(kernel)] = reached_barrier;
}
}  // namespace emu

#define threadIdx (emu::thread_idx)
#define blockIdx (emu::block_idx)
#define blockDim (emu::block_dim)
#define gridDim (emu::grid_dim)
#define __global__
#define __device__
#define __shared__ static
inline void __syncthreads() { emu::barrier(); }
