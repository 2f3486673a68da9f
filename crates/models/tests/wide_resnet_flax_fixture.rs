//! WideResNet against the reference, ported to current Flax.
//!
//! `tests/fixtures/make_wrn_fixture.py` (run once, committed with its output) builds the
//! reference's WRN in Flax linen with the reference's parameter paths and writes WRN-16-2's
//! parameters, BN statistics, an input batch, and the resulting train-mode logits, updated
//! running statistics, eval-mode logits, label-smoothed loss and every parameter gradient,
//! computed in float64. Loading it by name also proves our layout uses the reference's paths and
//! shapes one-to-one.
//!
//! Tolerances: logits and loss 1e-4 abs + 1e-4 rel; running statistics 1e-5 + 1e-4 rel;
//! gradients 2e-5 abs + 2e-3 rel. The script measured float32 Flax itself off its float64
//! truth by ≤ 2.1e-6 on logits and ≤ 2.5e-6 relative on gradients; ours accumulates in a
//! different order, hence the larger margins.

use ringsam_models::{ModelConfig, build};
use ringsam_nn::Pass;
use ringsam_nn::testing::assert_close;
use ringsam_tensor::Tensor;
use ringsam_tensor::loss::{LossShape, softmax_cross_entropy_backward, softmax_cross_entropy_forward};
use safetensors::SafeTensors;

fn fixture() -> Vec<u8> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/fixtures/wrn16x2_flax.safetensors");
    std::fs::read(path).unwrap_or_else(|e| panic!("{path}: {e} (regenerate with tests/fixtures/make_wrn_fixture.py)"))
}

fn tensor(st: &SafeTensors, name: &str) -> (Vec<usize>, Vec<f32>) {
    let t = st.tensor(name).unwrap_or_else(|e| panic!("fixture has no {name}: {e}"));
    assert_eq!(t.dtype(), safetensors::Dtype::F32, "{name}");
    let v = t.data().chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect();
    (t.shape().to_vec(), v)
}

#[test]
fn wrn16x2_matches_flax_reference() {
    let bytes = fixture();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let (_, meta) = SafeTensors::read_metadata(&bytes).unwrap();
    let meta = meta.metadata().clone().unwrap();
    assert_eq!(meta["magic"], "ringsam-fixture");
    assert_eq!(meta["version"], "1");

    let mut model = build("WideResnet16x2", &ModelConfig { num_classes: 10, in_channels: 3 }).unwrap();
    let layout = model.layout().clone();
    let state_layout = model.state_layout().clone();

    // Every fixture parameter maps to exactly one of ours, same shape, and vice versa.
    let n_fixture_params = st.names().iter().filter(|n| n.starts_with("params/")).count();
    assert_eq!(n_fixture_params, layout.entries().len(), "parameter tensors: fixture vs ours");
    let mut params = vec![0.0; layout.total()];
    for e in layout.entries() {
        let (shape, v) = tensor(&st, &format!("params/{}", e.name));
        assert_eq!(shape, e.shape, "shape of {}", e.name);
        params[e.id.range()].copy_from_slice(&v);
    }
    let mut state0 = vec![0.0; state_layout.total()];
    for e in state_layout.entries() {
        let (_, v) = tensor(&st, &format!("batch_stats/{}", e.name));
        state0[e.id.range()].copy_from_slice(&v);
    }
    let (xs, x_nhwc) = tensor(&st, "input");
    let (n, h, w, c) = (xs[0], xs[1], xs[2], xs[3]);
    let mut cnhw = vec![0.0; x_nhwc.len()];
    for ni in 0..n {
        for hi in 0..h {
            for wi in 0..w {
                for ci in 0..c {
                    cnhw[((ci * n + ni) * h + hi) * w + wi] = x_nhwc[((ni * h + hi) * w + wi) * c + ci];
                }
            }
        }
    }
    let x = Tensor::from_vec(&[c, n, h, w], cnhw).unwrap();
    let labels: Vec<u32> = tensor(&st, "labels").1.iter().map(|&l| l as u32).collect();

    // Eval mode with the fixture's running statistics.
    let params = Tensor::from(params);
    let mut state = Tensor::from(state0.clone());
    let logits = model.forward(&params, &mut state, &x, &Pass::eval()).unwrap().as_slice().to_vec();
    assert_close("logits_eval", &logits, &tensor(&st, "logits_eval").1, 1e-4, 1e-4);

    // Train mode: batch statistics, running statistics updated.
    let mut state = Tensor::from(state0.clone());
    let logits = model.forward(&params, &mut state, &x, &Pass::train(0, 0)).unwrap().as_slice().to_vec();
    assert_close("logits_train", &logits, &tensor(&st, "logits_train").1, 1e-4, 1e-4);
    for e in state_layout.entries() {
        assert_close(
            &format!("batch_stats_after/{}", e.name),
            &state[e.id.range()],
            &tensor(&st, &format!("batch_stats_after/{}", e.name)).1,
            1e-5,
            1e-4,
        );
    }

    // Loss with label smoothing 0.1, then every parameter gradient.
    let k = 10;
    let sh = LossShape { n, k };
    let (mut losses, mut probs) = (vec![0.0; n], vec![0.0; n * k]);
    let loss = softmax_cross_entropy_forward(&mut losses, &mut probs, &logits, &labels, 0.1, &sh).unwrap();
    assert_close("loss", &[loss], &tensor(&st, "loss").1, 1e-4, 1e-4);
    let mut dlogits = vec![0.0; n * k];
    softmax_cross_entropy_backward(&mut dlogits, &probs, &labels, 0.1, 1.0 / n as f32, &sh).unwrap();
    let dlogits = Tensor::from_vec(&[n, k], dlogits).unwrap();
    let mut grads = Tensor::from(vec![0.0; layout.total()]);
    model.backward(&params, &mut grads, &x, &dlogits).unwrap();
    for e in layout.entries() {
        assert_close(&format!("grads/{}", e.name), &grads[e.id.range()], &tensor(&st, &format!("grads/{}", e.name)).1, 2e-5, 2e-3);
    }
}
