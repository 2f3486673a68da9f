//! Helpers shared by the model tests.

use ringsam_models::{ModelConfig, build};
use ringsam_nn::{Pass, Rng};
use ringsam_tensor::Tensor;
use ringsam_tensor::loss::{LossShape, softmax_cross_entropy_backward, softmax_cross_entropy_forward};

/// Trains `name` with SGD + momentum 0.9 (lr 0.05) on one fixed batch of `n` random `side`×`side`
/// RGB images with random labels, stopping once the loss is below `first / factor`. Returns the
/// first and the last loss.
pub fn memorise(name: &str, n: usize, side: usize, classes: usize, steps: u64, factor: f32) -> (f32, f32) {
    let mut m = build(name, &ModelConfig { num_classes: classes, in_channels: 3 }).unwrap();
    let mut params = vec![0.0; m.layout().total()];
    let mut state = vec![0.0; m.state_layout().total()];
    m.init(&mut params, &mut state, 0);
    let mut rng = Rng::new(42);
    let x = Tensor::from_vec(&[3, n, side, side], (0..3 * n * side * side).map(|_| rng.normal()).collect()).unwrap();
    let labels: Vec<u32> = (0..n).map(|_| rng.below(classes as u64) as u32).collect();
    let sh = LossShape { n, k: classes };
    let (mut losses, mut probs) = (vec![0.0; n], vec![0.0; n * classes]);
    let mut dlogits = Tensor::zeros(&[n, classes], Default::default()).unwrap();
    let (mut grads, mut momentum) = (vec![0.0; params.len()], vec![0.0; params.len()]);
    let (mut first, mut last) = (None, f32::NAN);
    for step in 0..steps {
        let logits = m.forward(&params, &mut state, &x, &Pass::train(0, step)).unwrap();
        let loss = softmax_cross_entropy_forward(&mut losses, &mut probs, logits.as_slice(), &labels, 0.0, &sh).unwrap();
        first.get_or_insert(loss);
        last = loss;
        if loss < first.unwrap() / factor {
            break;
        }
        softmax_cross_entropy_backward(dlogits.as_mut_slice(), &probs, &labels, 0.0, 1.0 / n as f32, &sh).unwrap();
        grads.fill(0.0);
        m.backward(&params, &mut grads, &x, &dlogits).unwrap();
        for ((w, g), v) in params.iter_mut().zip(&grads).zip(&mut momentum) {
            *v = 0.9 * *v + g;
            *w -= 0.05 * *v;
        }
    }
    (first.unwrap(), last)
}
