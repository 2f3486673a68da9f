//! Where a model's layers come from while the model is built.

use ringsam_nn::layers::{BatchNorm, BatchNormConfig, Conv2d, Conv2dConfig, Linear, SqueezeExcite};
use ringsam_nn::{ParamLayout, StateLayout, Workspace};

/// Makes a model's layers, declaring each one's parameters and state in the model's layouts as it
/// is made, so the layouts follow the order of making. Every convolution it makes shares one
/// im2col scratch: they run one at a time, and the largest alone can take hundreds of MB.
#[derive(Default)]
pub(crate) struct LayerFactory {
    params: ParamLayout,
    state: StateLayout,
    workspace: Workspace,
}

impl LayerFactory {
    /// Parameters declared so far: the offset of the next layer's first parameter.
    pub(crate) fn params_declared(&self) -> usize {
        self.params.total()
    }

    /// A convolution; its kernel is `{name}/kernel`.
    pub(crate) fn conv(&mut self, name: &str, cfg: Conv2dConfig) -> Conv2d {
        Conv2d::with_workspace(&mut self.params, name, cfg, &self.workspace)
    }

    /// A depthwise convolution whose kernel is stored as TensorFlow stores it (`Conv2d::depthwise_tf`).
    pub(crate) fn depthwise_conv(&mut self, name: &str, channels: usize, kernel: usize, stride: usize) -> Conv2d {
        Conv2d::depthwise_tf(&mut self.params, name, channels, kernel, stride, &self.workspace)
    }

    /// A batch norm; its parameters are `{name}/scale` and `{name}/bias`, its state `{name}/mean`
    /// and `{name}/var`.
    pub(crate) fn batch_norm(&mut self, name: &str, cfg: BatchNormConfig) -> BatchNorm {
        BatchNorm::new(&mut self.params, &mut self.state, name, cfg)
    }

    /// A dense layer from `c_in` to `c_out` features.
    pub(crate) fn dense(&mut self, name: &str, c_in: usize, c_out: usize) -> Linear {
        Linear::new(&mut self.params, name, c_in, c_out)
    }

    /// A squeeze-excitation of `channels`, through `reduced`.
    pub(crate) fn squeeze_excite(&mut self, name: &str, channels: usize, reduced: usize) -> SqueezeExcite {
        SqueezeExcite::new(&mut self.params, name, channels, reduced)
    }

    /// The finished parameter and state layouts.
    pub(crate) fn into_layouts(self) -> (ParamLayout, StateLayout) {
        (self.params, self.state)
    }
}
