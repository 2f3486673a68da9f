//! The one [`Model`] implementation: a stem, a body and a head, each a [`Chain`] that places its
//! own gradient-ready reports. A family only builds the three chains (see any model file).

use ringsam_nn::{NnError, ParamLayout, Pass, StateLayout};
use ringsam_tensor::Tensor;

use crate::chain::Chain;
use crate::layer_factory::LayerFactory;
use crate::model::{check_backward_buffers, check_buffers};
use crate::{Model, ModelConfig};

/// A family's initialisation rule (one of [`crate::init`]'s).
pub(crate) type Init = fn(&ParamLayout, &mut [f32], &StateLayout, &mut [f32], u64);

/// A classifier built as stem → body → head, three chains of layers: forward runs them in order,
/// backward in reverse, each chain reporting its gradients as final as backward leaves it (see
/// [`Model::backward_notify`]). Every registered model is one.
pub struct Network {
    name: String,
    cfg: ModelConfig,
    layout: ParamLayout,
    state_layout: StateLayout,
    init: Init,
    stem: Chain,
    body: Chain,
    head: Chain,
}

impl Network {
    /// The model `name`: its three chains, whose layers `layers` made in that order.
    pub(crate) fn assemble(name: &str, cfg: ModelConfig, init: Init, layers: LayerFactory, stem: Chain, body: Chain, head: Chain) -> Self {
        let (layout, state_layout) = layers.into_layouts();
        Network { name: name.into(), cfg, layout, state_layout, init, stem, body, head }
    }
}

impl Model for Network {
    fn name(&self) -> &str {
        &self.name
    }

    fn layout(&self) -> &ParamLayout {
        &self.layout
    }

    fn state_layout(&self) -> &StateLayout {
        &self.state_layout
    }

    fn config(&self) -> ModelConfig {
        self.cfg
    }

    fn init(&self, params: &mut [f32], state: &mut [f32], seed: u64) {
        (self.init)(&self.layout, params, &self.state_layout, state, seed);
    }

    fn forward(&mut self, params: &Tensor, state: &mut Tensor, x: &Tensor, pass: &Pass) -> Result<&Tensor, NnError> {
        check_buffers(&self.layout, &self.state_layout, params.len(), state.len())?;
        self.stem.forward(params, state, x, pass)?;
        self.body.forward(params, state, self.stem.output(), pass)?;
        self.head.forward(params, state, self.body.output(), pass)?;
        Ok(self.head.output())
    }

    fn backward(&mut self, params: &Tensor, grads: &mut Tensor, x: &Tensor, dlogits: &Tensor) -> Result<(), NnError> {
        self.backward_notify(params, grads, x, dlogits, &mut |_, _| {})
    }

    /// Mirror of `forward`; each chain reports its gradients as they become final.
    fn backward_notify(
        &mut self,
        params: &Tensor,
        grads: &mut Tensor,
        x: &Tensor,
        dlogits: &Tensor,
        ready: &mut dyn FnMut(&mut Tensor, usize),
    ) -> Result<(), NnError> {
        check_backward_buffers(&self.layout, &self.state_layout, params, grads)?;
        self.head.backward(params, grads, self.body.output(), dlogits, ready)?;
        self.body.backward(params, grads, self.stem.output(), self.head.dinput(), ready)?;
        self.stem.backward(params, grads, x, self.body.dinput(), ready)
    }

    fn last_forward_macs(&self) -> usize {
        self.stem.macs() + self.body.macs() + self.head.macs()
    }

    fn last_backward_macs(&self) -> usize {
        // Twice the forward's, less the first layer's data gradient, which it does not compute.
        2 * self.last_forward_macs() - self.stem.first_layer_macs()
    }
}
