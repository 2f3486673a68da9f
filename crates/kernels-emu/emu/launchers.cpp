// One C entry point for every kernel (src/lib.rs calls it): the kernel by name, the launch shape,
// and the arguments as 8-byte slots in the kernel's parameter order, each unpacked to the type
// the kernel declares. The kernels are the very files NVRTC compiles.
#include <cstdint>
#include <cstring>
#include <utility>

#include "cuda_emu.h"

#include "../../kernels/cu/common.cuh"
#include "../../kernels/cu/flat.cu"
#include "../../kernels/cu/reduce.cu"
#include "../../kernels/cu/activation.cu"
#include "../../kernels/cu/loss.cu"
#include "../../kernels/cu/dropout.cu"
#include "../../kernels/cu/batchnorm.cu"
#include "../../kernels/cu/pool.cu"
#include "../../kernels/cu/im2col.cu"
#include "../../kernels/cu/dense.cu"
#include "../../kernels/cu/examples.cu"
#include "../../kernels/cu/weights.cu"
#include "../../kernels/cu/depthwise.cu"
#include "../../kernels/cu/se.cu"

namespace {
// A slot as a parameter: pointers are addresses, floats their bits in the low half, integers as
// they are.
template <typename T>
T from_slot(uint64_t s) {
    if constexpr (std::is_pointer_v<T>) {
        return reinterpret_cast<T>(static_cast<uintptr_t>(s));
    } else if constexpr (std::is_same_v<T, float>) {
        uint32_t bits = static_cast<uint32_t>(s);
        float f;
        std::memcpy(&f, &bits, sizeof f);
        return f;
    } else {
        return static_cast<T>(s);
    }
}

template <typename... P, std::size_t... I>
void call(void (*kernel)(P...), unsigned grid, unsigned block, const uint64_t* a, std::index_sequence<I...>) {
    emu::launch(kernel, grid, block, from_slot<P>(a[I])...);
}

struct Entry {
    const char* name;
    std::size_t arity;
    void (*run)(unsigned grid, unsigned block, const uint64_t* args);
};

template <auto Kernel>
struct Launcher;

template <typename... P, void (*Kernel)(P...)>
struct Launcher<Kernel> {
    static constexpr std::size_t arity = sizeof...(P);
    static void run(unsigned grid, unsigned block, const uint64_t* args) {
        call(Kernel, grid, block, args, std::index_sequence_for<P...>{});
    }
};

#define KERNEL(k) Entry{#k, Launcher<k>::arity, Launcher<k>::run}

const Entry KERNELS[] = {
    KERNEL(sam_ascent),           KERNEL(asam_ascent),           KERNEL(nesterov_update),
    KERNEL(momentum_update),      KERNEL(rmsprop_update),        KERNEL(scale),  KERNEL(clip_to_norm),  KERNEL(count_flags),
    KERNEL(fill),                 KERNEL(copy),
    KERNEL(axpy),                 KERNEL(ema_update),            KERNEL(sum_squares_blocks),
    KERNEL(asam_norm_blocks),     KERNEL(sum_partials),          KERNEL(relu_forward),
    KERNEL(relu_backward),        KERNEL(sigmoid_forward),       KERNEL(sigmoid_backward),
    KERNEL(silu_forward),         KERNEL(silu_backward),         KERNEL(softmax_xent_forward),
    KERNEL(softmax_xent_backward), KERNEL(dropout_forward),      KERNEL(dropout_backward),
    KERNEL(batchnorm_forward_train), KERNEL(batchnorm_forward_eval), KERNEL(batchnorm_backward),      KERNEL(batchnorm_backward_eval),
    KERNEL(avgpool_forward),      KERNEL(avgpool_backward),      KERNEL(maxpool_forward),
    KERNEL(maxpool_backward),     KERNEL(global_avgpool_forward), KERNEL(global_avgpool_backward),
    KERNEL(add),                  KERNEL(im2col),                KERNEL(col2im),
    KERNEL(broadcast_bias),       KERNEL(add_bias_gradient),     KERNEL(scale_planes),
    KERNEL(count_errors),         KERNEL(mix_planes),         KERNEL(depthwise_forward),     KERNEL(depthwise_backward_data),
    KERNEL(depthwise_backward_weight), KERNEL(depthwise_weight_parts), KERNEL(depthwise_weight_add), KERNEL(shift_subsample_forward), KERNEL(shift_subsample_backward),
    KERNEL(add_row_bias),         KERNEL(add_row_sums),          KERNEL(plane_dot),
    KERNEL(se_input_backward),    KERNEL(bn_part_sums),          KERNEL(bn_part_stats),
    KERNEL(bn_part_apply),        KERNEL(bn_part_grad_sums),     KERNEL(bn_part_grad_stats),
    KERNEL(bn_part_grad_apply),   KERNEL(example_coefficients), KERNEL(hwio_to_kcrs), KERNEL(kcrs_add_to_hwio), KERNEL(cnhw_to_nchw),
};
}  // namespace

// Runs kernel `name`; returns 0, or -1 for an unknown kernel, or the kernel's arity when `nargs`
// is not it.
extern "C" int64_t emu_launch(const char* name, unsigned grid, unsigned block, const uint64_t* args, std::size_t nargs) {
    for (const Entry& e : KERNELS) {
        if (std::strcmp(e.name, name) == 0) {
            if (e.arity != nargs) return static_cast<int64_t>(e.arity);
            e.run(grid, block, args);
            return 0;
        }
    }
    return -1;
}
