//! The parameter arena: every parameter of a model in one flat buffer.
//!
//! A model declares each parameter exactly once with [`ParamLayout::push`], naming it by the
//! reference's Flax path (`WideResnetGroup_0/WideResnetBlock_0/conv1/kernel`) and giving its Flax
//! shape (HWIO for convolutions). `push` returns a [`ParamId`] holding the offset and length, which
//! the layer keeps; there is no second list to keep in sync. The same machinery lays out model
//! state (batch-norm running statistics) in a separate buffer.
//!
//! Why one buffer: the global gradient norm is one reduction, SAM's `w + e` one axpy, the optimizer
//! one fused pass, and the all-reduce sends gradient buckets without per-tensor copies.

use ringsam_tensor::Tensor;
use std::ops::Range;

/// Where one parameter lives in the flat buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ParamId {
    index: usize,
    offset: usize,
    len: usize,
}

impl ParamId {
    /// The parameter's range in the flat buffer.
    pub fn range(self) -> Range<usize> {
        self.offset..self.offset + self.len
    }
    /// Position in declaration order.
    pub fn index(self) -> usize {
        self.index
    }
    /// Number of values.
    pub fn len(self) -> usize {
        self.len
    }
    /// True for a parameter with no value (never produced by `push`, which rejects empty shapes).
    pub fn is_empty(self) -> bool {
        self.len == 0
    }
}

/// One declared parameter.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParamEntry {
    /// The Flax path.
    pub name: String,
    /// The Flax shape.
    pub shape: Vec<usize>,
    /// Its place in the buffer.
    pub id: ParamId,
}

/// The ordered table of a model's parameters (or of its state).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ParamLayout {
    entries: Vec<ParamEntry>,
    total: usize,
}

/// Model state (batch-norm running statistics) uses the same table type, in its own buffer.
pub type StateLayout = ParamLayout;

impl ParamLayout {
    /// An empty layout.
    pub fn new() -> Self {
        Self::default()
    }

    /// Declares a parameter. Names must be unique and shapes non-empty: both are programming
    /// errors in a model definition, so they panic with the name.
    pub fn push(&mut self, name: impl Into<String>, shape: &[usize]) -> ParamId {
        let name = name.into();
        let len: usize = shape.iter().product();
        assert!(len > 0, "parameter {name} has an empty shape {shape:?}");
        assert!(self.find(&name).is_none(), "parameter {name} declared twice");
        let id = ParamId { index: self.entries.len(), offset: self.total, len };
        self.entries.push(ParamEntry { name, shape: shape.to_vec(), id });
        self.total += len;
        id
    }

    /// Declared entries, in order (which is also buffer order).
    pub fn entries(&self) -> &[ParamEntry] {
        &self.entries
    }

    /// Total number of values.
    pub fn total(&self) -> usize {
        self.total
    }

    /// Looks a parameter up by its Flax path.
    pub fn find(&self, name: &str) -> Option<&ParamEntry> {
        self.entries.iter().find(|e| e.name == name)
    }
}

/// Parameters and their gradients, in one layout.
#[derive(Clone, Debug)]
pub struct Arena {
    /// The table.
    pub layout: ParamLayout,
    /// Parameter values, `layout.total()` of them (a 1-D tensor: what the layers take).
    pub params: Tensor,
    /// Gradients, same layout.
    pub grads: Tensor,
}

impl Arena {
    /// Zero-filled parameters and gradients for `layout`.
    pub fn new(layout: ParamLayout) -> Self {
        let n = layout.total();
        Arena { layout, params: Tensor::from(vec![0.0; n]), grads: Tensor::from(vec![0.0; n]) }
    }

    /// Sets all gradients to zero (backward passes accumulate).
    pub fn zero_grad(&mut self) {
        self.grads.fill(0.0);
    }

    /// A parameter's values.
    pub fn param(&self, id: ParamId) -> &[f32] {
        &self.params[id.range()]
    }

    /// A parameter's values, mutable.
    pub fn param_mut(&mut self, id: ParamId) -> &mut [f32] {
        &mut self.params[id.range()]
    }

    /// A parameter's gradient.
    pub fn grad(&self, id: ParamId) -> &[f32] {
        &self.grads[id.range()]
    }

    /// Number of trainable values.
    pub fn len(&self) -> usize {
        self.params.len()
    }

    /// True for a model without parameters.
    pub fn is_empty(&self) -> bool {
        self.params.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn push_lays_out_contiguously() {
        let mut l = ParamLayout::new();
        let a = l.push("a/kernel", &[3, 3, 2, 4]);
        let b = l.push("a/bias", &[4]);
        assert_eq!(a.range(), 0..72);
        assert_eq!(b.range(), 72..76);
        assert_eq!(l.total(), 76);
        assert_eq!(l.find("a/bias").unwrap().id, b);
    }

    #[test]
    #[should_panic(expected = "declared twice")]
    fn duplicate_names_are_a_bug() {
        let mut l = ParamLayout::new();
        l.push("x", &[1]);
        l.push("x", &[1]);
    }
}
