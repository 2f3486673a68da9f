//! The reference's initialisation, applied by parameter name.
//!
//! Rules (docs/SAM.md, "Initialisation and batch norm"; `ringsam_nn::init` has the formulas): 4-d `*/kernel` →
//! Kaiming-normal fan-out; 2-d `*/kernel` (the classifier) → `U(±1/√out)`; `*/bias` → 0;
//! `*/scale` → 1; state `*/mean` → 0, `*/var` → 1. Each parameter draws from its own stream keyed
//! by `(seed, its index)`, so the values do not depend on thread count or on other parameters.

use ringsam_nn::init::{constant, dense_uniform, kaiming_normal_fan_out, variance_scaling_truncated};
use ringsam_nn::{ParamLayout, Rng, StateLayout};

/// Initialises `params` (laid out by `layout`) and `state` (by `state_layout`).
pub fn init_by_name(layout: &ParamLayout, params: &mut [f32], state_layout: &StateLayout, state: &mut [f32], seed: u64) {
    for e in layout.entries() {
        let w = &mut params[e.id.range()];
        let mut rng = Rng::stream(seed, 0, e.id.index() as u64);
        let leaf = e.name.rsplit('/').next().unwrap_or("");
        match (leaf, e.shape.len()) {
            ("kernel", 4) => kaiming_normal_fan_out(w, &e.shape, &mut rng),
            ("kernel", 2) => dense_uniform(w, e.shape[1], &mut rng),
            ("scale", _) => constant(w, 1.0),
            _ => constant(w, 0.0),
        }
    }
    init_state(state_layout, state);
}

/// The reference's ImageNet ResNet (flax's defaults): every kernel, convolution or dense,
/// `lecun_normal` — truncated normal with variance `1/fan_in` (`fan_in = kh·kw·c_in`, or the
/// dense input width); biases 0; BN scale 1 except the scales named in `zero_scales` (the last BN
/// of each bottleneck), which start at 0; running mean 0, variance 1.
pub fn init_resnet_imagenet(
    layout: &ParamLayout,
    params: &mut [f32],
    state_layout: &StateLayout,
    state: &mut [f32],
    seed: u64,
    zero_scale: impl Fn(&str) -> bool,
) {
    for e in layout.entries() {
        let w = &mut params[e.id.range()];
        let mut rng = Rng::stream(seed, 0, e.id.index() as u64);
        let leaf = e.name.rsplit('/').next().unwrap_or("");
        match leaf {
            "kernel" => {
                let fan_in: usize = e.shape[..e.shape.len() - 1].iter().product();
                variance_scaling_truncated(w, 1.0, fan_in, &mut rng);
            }
            "scale" => constant(w, if zero_scale(&e.name) { 0.0 } else { 1.0 }),
            _ => constant(w, 0.0),
        }
    }
    init_state(state_layout, state);
}

/// The reference's EfficientNet: convolution kernels `variance_scaling(2.0, 'fan_out',
/// 'truncated_normal')` with `fan_out = kh·kw·c_out` (a depthwise kernel `(k, k, C, 1)`: `k·k`);
/// the classifier `U(±1/√classes)`; SE biases 0; BN scale 1, bias 0; running mean 0, variance 1.
pub fn init_efficientnet(layout: &ParamLayout, params: &mut [f32], state_layout: &StateLayout, state: &mut [f32], seed: u64) {
    for e in layout.entries() {
        let w = &mut params[e.id.range()];
        let mut rng = Rng::stream(seed, 0, e.id.index() as u64);
        let leaf = e.name.rsplit('/').next().unwrap_or("");
        match (leaf, e.shape.len()) {
            ("kernel" | "depthwise_kernel", 4) => {
                let fan_out = e.shape[0] * e.shape[1] * e.shape[3];
                variance_scaling_truncated(w, 2.0, fan_out, &mut rng);
            }
            ("kernel", 2) => dense_uniform(w, e.shape[1], &mut rng),
            ("scale", _) => constant(w, 1.0),
            _ => constant(w, 0.0),
        }
    }
    init_state(state_layout, state);
}

fn init_state(state_layout: &StateLayout, state: &mut [f32]) {
    for e in state_layout.entries() {
        let v = if e.name.ends_with("/var") { 1.0 } else { 0.0 };
        constant(&mut state[e.id.range()], v);
    }
}
