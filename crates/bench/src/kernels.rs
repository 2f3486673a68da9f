//! The CPU engine's kernels as the reference the GPU kernels are held to
//! ([`ringsam_kernels::selftest`]): `ringsam-tensor`'s functions behind the self-test's plain
//! signatures. Used by `ringsam selftest kernels` on a GPU and by the emulated tests in CI.

use ringsam_kernels::activation::Activation;
use ringsam_kernels::conv::ConvShape as KernelConv;
use ringsam_kernels::loss::LossShape;
use ringsam_kernels::pool::PoolShape as KernelPool;
use ringsam_kernels::selftest::CpuReference;
use ringsam_tensor::{MatMut, MatRef, activation, batchnorm, conv, depthwise, im2col, loss, pool};

fn tensor_shape(sh: LossShape) -> loss::LossShape {
    loss::LossShape { n: sh.n, k: sh.k }
}

/// `ringsam-tensor`'s activations and softmax cross-entropy. The self-test gives them buffers of
/// matching lengths and labels in range, so an error here is a bug in the self-test: it panics.
pub fn cpu_reference() -> CpuReference {
    CpuReference {
        activation_forward: |act, out, inp| {
            match act {
                Activation::Relu => activation::relu_forward(out, inp),
                Activation::Sigmoid => activation::sigmoid_forward(out, inp),
                Activation::Silu => activation::silu_forward(out, inp),
            }
            .expect("the self-test's buffers match")
        },
        activation_backward: |act, dinp, dout, kept| {
            match act {
                Activation::Relu => activation::relu_backward(dinp, dout, kept),
                Activation::Sigmoid => activation::sigmoid_backward(dinp, dout, kept),
                Activation::Silu => activation::silu_backward(dinp, dout, kept),
            }
            .expect("the self-test's buffers match")
        },
        softmax_xent_forward: |losses, probs, logits, labels, eps, sh| {
            loss::softmax_cross_entropy_forward(losses, probs, logits, labels, eps, &tensor_shape(sh))
                .expect("the self-test's buffers match")
        },
        softmax_xent_backward: |dlogits, probs, labels, eps, scale, sh| {
            loss::softmax_cross_entropy_backward(dlogits, probs, labels, eps, scale, &tensor_shape(sh))
                .expect("the self-test's buffers match")
        },
        dropout_mask: ringsam_nn::layers::draw_mask,
        batchnorm_forward_train: |out, mean, var, rstd, inp, scale, bias, eps, relu, c, m| {
            batchnorm::batchnorm_forward_train(out, mean, var, rstd, inp, scale, bias, eps, relu, &batchnorm::BnShape { c, m })
                .expect("the self-test's buffers match")
        },
        pool_same: |planes, h, w, window, stride| {
            kernel_pool(pool::PoolShape::same(planes, h, w, window, stride).expect("the self-test's shape is valid"))
        },
        avgpool: [
            |out, inp, sh| pool::avgpool_forward(out, inp, &cpu_pool(sh)).expect("the self-test's buffers match"),
            |dinp, dout, sh| pool::avgpool_backward(dinp, dout, &cpu_pool(sh)).expect("the self-test's buffers match"),
        ],
        maxpool_forward: |out, am, inp, sh| pool::maxpool_forward(out, am, inp, &cpu_pool(sh)).expect("the self-test's buffers match"),
        maxpool_backward: |dinp, dout, am, sh| {
            pool::maxpool_backward(dinp, dout, am, &cpu_pool(sh)).expect("the self-test's buffers match")
        },
        global_avgpool: [
            |out, inp, planes, hw| pool::global_avgpool_forward(out, inp, planes, hw).expect("the self-test's buffers match"),
            |dinp, dout, planes, hw| pool::global_avgpool_backward(dinp, dout, planes, hw).expect("the self-test's buffers match"),
        ],
        add: |out, a, b| ringsam_tensor::elementwise::add_forward(out, a, b).expect("the self-test's buffers match"),
        conv_same: |n, c, h, w, k, kernel, stride, groups| {
            kernel_conv(conv::Conv2dShape::same(n, c, h, w, k, kernel, kernel, stride, groups).expect("the self-test's shape is valid"))
        },
        im2col: [
            |col, inp, sh, c0| im2col::im2col(col, inp, &cpu_conv(sh), c0),
            |dinp, col, sh, c0| im2col::col2im(dinp, col, &cpu_conv(sh), c0),
        ],
        bias: [ringsam_nn::layers::broadcast_bias, ringsam_nn::layers::add_bias_gradient],
        scale_examples: ringsam_nn::layers::scale_examples,
        mix_examples: ringsam_nn::layers::mix_examples,
        count_errors: ringsam_train::step::count_errors,
        depthwise_forward: |out, inp, weight, sh| depthwise::depthwise_forward(out, inp, weight, &cpu_conv(sh)),
        depthwise_backward: |dinp, dweight, dout, inp, weight, sh| {
            depthwise::depthwise_backward(Some(dinp), dweight, dout, inp, weight, &cpu_conv(sh))
        },
        conv_forward: |out, inp, weight, sh| conv::conv2d_forward_ref(out, inp, weight, &cpu_conv(sh)).expect("the self-test's shape fits"),
        conv_backward: |dinp, dweight, dout, inp, weight, sh| {
            conv::conv2d_backward_ref(dinp, dweight, dout, inp, weight, &cpu_conv(sh)).expect("the self-test's shape fits")
        },
        gemm: |c, (cr, cc, crs, ccs), a, (ar, ac, ars, acs), b, (br, bc, brs, bcs), accumulate| {
            let c = MatMut { data: c, rows: cr, cols: cc, rs: crs, cs: ccs };
            let a = MatRef { data: a, rows: ar, cols: ac, rs: ars, cs: acs };
            let b = MatRef { data: b, rows: br, cols: bc, rs: brs, cs: bcs };
            ringsam_tensor::gemm_ref(c, a, b, accumulate).expect("the self-test's views fit")
        },
        batchnorm_backward: |dinp, dscale, dbias, dout, out, inp, mean, rstd, scale, relu, c, m| {
            batchnorm::batchnorm_backward(dinp, dscale, dbias, dout, out, inp, mean, rstd, scale, relu, &batchnorm::BnShape { c, m })
                .expect("the self-test's buffers match")
        },
    }
}

fn kernel_pool(s: pool::PoolShape) -> KernelPool {
    s.into()
}

fn cpu_pool(s: &KernelPool) -> pool::PoolShape {
    s.into()
}

fn kernel_conv(s: conv::Conv2dShape) -> KernelConv {
    s.into()
}

fn cpu_conv(s: &KernelConv) -> conv::Conv2dShape {
    s.into()
}
