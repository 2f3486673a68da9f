// Runs kernels written in ringsam's CUDA C subset as plain C++ on the CPU (tests only).
//
// The subset: 1-D grids and blocks; `__global__` functions of pointers and scalars;
// `__shared__` arrays; `__syncthreads()`; <cmath>'s float functions; `#pragma unroll` (ignored). No warp intrinsics, no
// atomics, no dynamic shared memory. Emulated so:
// - blocks run one after another; a block's threads are OS threads (the same ones for every
//   block), so `__syncthreads()` is a real barrier (std::barrier) and a reduction's tree runs as
//   it would on a GPU;
// - `__shared__` is `static`: one array shared by the block's threads (blocks never overlap);
// - threadIdx/blockIdx are per thread, blockDim/gridDim per launch; launches are serialized, as
//   on one stream.
// Compiled with -ffp-contract=off, as the kernels are with --fmad=false.
#pragma once

#include <barrier>
#include <cmath>
#include <mutex>
#include <thread>
#include <vector>

struct dim3 {
    unsigned x, y, z;
    dim3(unsigned x_ = 1, unsigned y_ = 1, unsigned z_ = 1) : x(x_), y(y_), z(z_) {}
};

namespace emu {
inline thread_local dim3 thread_idx, block_idx;
inline dim3 block_dim, grid_dim;
inline thread_local std::barrier<>* block_barrier = nullptr;

// Runs kernel<<<grid, block>>>(args...) and returns when every block has finished.
inline std::mutex device;

template <typename... Params, typename... Args>
void launch(void (*kernel)(Params...), unsigned grid, unsigned block, Args... args) {
    // One launch at a time, as on one stream: blockDim/gridDim and the `__shared__` arrays are
    // process-wide here, and tests launch from several threads.
    std::lock_guard<std::mutex> one_at_a_time(device);
    grid_dim = dim3(grid);
    block_dim = dim3(block);
    // One OS thread per GPU thread of a block, reused for every block: each runs the kernel for
    // block 0, meets the others, runs it for block 1, … so blocks never overlap (the `__shared__`
    // arrays are reused) and threads are spawned once per launch, not once per block.
    std::barrier<> barrier(block);
    std::vector<std::thread> threads;
    threads.reserve(block);
    for (unsigned t = 0; t < block; ++t) {
        threads.emplace_back([&, t] {
            thread_idx = dim3(t);
            block_barrier = &barrier;
            for (unsigned b = 0; b < grid; ++b) {
                block_idx = dim3(b);
                kernel(args...);
                barrier.arrive_and_wait();
            }
        });
    }
    for (auto& th : threads) th.join();
}
}  // namespace emu

#define threadIdx (emu::thread_idx)
#define blockIdx (emu::block_idx)
#define blockDim (emu::block_dim)
#define gridDim (emu::grid_dim)
#define __global__
#define __device__
#define __shared__ static
inline void __syncthreads() { emu::block_barrier->arrive_and_wait(); }
