//! The reference's initialisation, applied by parameter name.
//!
//! Rules (reference/sam.md §1.4; `ringsam_nn::init` has the formulas): 4-d `*/kernel` →
//! Kaiming-normal fan-out; 2-d `*/kernel` (the classifier) → `U(±1/√out)`; `*/bias` → 0;
//! `*/scale` → 1; state `*/mean` → 0, `*/var` → 1. Each parameter draws from its own stream keyed
//! by `(seed, its index)`, so the values do not depend on thread count or on other parameters.

use ringsam_nn::init::{constant, dense_uniform, kaiming_normal_fan_out};
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
    for e in state_layout.entries() {
        let v = if e.name.ends_with("/var") { 1.0 } else { 0.0 };
        constant(&mut state[e.id.range()], v);
    }
}
