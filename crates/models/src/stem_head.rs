//! The stems and the head that several families share, under the reference's names.

use ringsam_nn::layers::{BatchNormConfig, Conv2d, Conv2dConfig, GlobalAvgPool};

use crate::chain::{Chain, ChainBuilder};
use crate::layer_factory::LayerFactory;

/// Channels of the CIFAR families' stem.
pub(crate) const CIFAR_STEM_WIDTH: usize = 16;

/// A CIFAR network's first layer: a 3×3 convolution to 16 channels, stride 1. Nothing consumes
/// the gradient of the network's input, so it computes none.
pub(crate) fn first_conv(layers: &mut LayerFactory, name: &str, in_channels: usize) -> Conv2d {
    layers.conv(name, Conv2dConfig { input_grad: false, ..Conv2dConfig::same(in_channels, CIFAR_STEM_WIDTH, 3, 1) })
}

/// WideResNet's stem: `init_conv` alone.
pub(crate) fn init_conv_stem(layers: &mut LayerFactory, in_channels: usize) -> Chain {
    Chain::sequential(layers).then(|l| first_conv(l, "init_conv", in_channels)).build()
}

/// Shake-Shake's and PyramidNet's stem: `init_conv`, then `init_bn` (batch norm, no ReLU).
pub(crate) fn init_conv_bn_stem(layers: &mut LayerFactory, in_channels: usize) -> Chain {
    Chain::sequential(layers)
        .then(|l| first_conv(l, "init_conv", in_channels))
        .then(|l| l.batch_norm("init_bn", BatchNormConfig::cifar(CIFAR_STEM_WIDTH, false)))
        .build()
}

/// WideResNet's and PyramidNet's head: the batch norm + ReLU `bn`, then [`ChainBuilder::pool_dense`]
/// to `Dense_0`.
pub(crate) fn bn_relu_head(layers: &mut LayerFactory, bn: &str, features: usize, classes: usize) -> Chain {
    Chain::sequential(layers)
        .then(|l| l.batch_norm(bn, BatchNormConfig::cifar(features, true)))
        .pool_dense("Dense_0", features, classes)
        .build()
}

impl ChainBuilder<'_> {
    /// Appends what every family but EfficientNet ends its head with: `global_avg_pool`, then the
    /// dense layer `dense` from `features` to `classes` (with bias).
    pub(crate) fn pool_dense(self, dense: &str, features: usize, classes: usize) -> Self {
        self.then(|_| GlobalAvgPool::new("global_avg_pool")).then(|l| l.dense(dense, features, classes))
    }
}
