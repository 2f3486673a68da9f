//! GEMM backends side by side on the engine's im2col shapes, as GFLOP/s (criterion throughput).
//!
//! Shapes `(M, K, N)` are WRN-16-4 at batch 64 (N = 64·32·32): the forward `(64,576,65536)`, the
//! data-gradient `(576,64,65536)`, the weight-gradient `(576,65536,64)` of a 64-channel 3×3
//! convolution, and a 128-channel one at 16×16 `(128,1152,16384)`. Backends: `ringsam::gemm`
//! (whichever backend this build selected: the `gemm` crate by default, OpenBLAS with
//! `--features blas`) and ndarray's default `matrixmultiply` (`Array2::dot`), the baseline.
//!
//! Run: `cargo bench --bench gemm` (add `--features blas` to measure OpenBLAS as the engine's).

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use ndarray::Array2;
use ringsam_tensor::gemm::{MatMut, MatRef, gemm};

const SHAPES: &[(usize, usize, usize)] = &[(64, 576, 65536), (576, 64, 65536), (576, 65536, 64), (128, 1152, 16384)];

fn bench(c: &mut Criterion) {
    ringsam_tensor::threads::configure(None).expect("thread pool");
    let mut group = c.benchmark_group("gemm");
    group.sample_size(10).warm_up_time(std::time::Duration::from_millis(500)).measurement_time(std::time::Duration::from_secs(3));
    for &(m, k, n) in SHAPES {
        group.throughput(Throughput::Elements((2 * m * k * n) as u64)); // "elements/s" = FLOP/s
        let a: Vec<f32> = (0..m * k).map(|i| (i % 7) as f32 * 0.1).collect();
        let b: Vec<f32> = (0..k * n).map(|i| (i % 5) as f32 * 0.1).collect();
        let mut out = vec![0.0f32; m * n];
        let id = format!("{m}x{k}x{n}");
        group.bench_function(BenchmarkId::new(ringsam_tensor::gemm::backend_name(), &id), |bch| {
            bch.iter(|| gemm(MatMut::row_major(&mut out, m, n), MatRef::row_major(&a, m, k), MatRef::row_major(&b, k, n), false).unwrap())
        });
        let (aa, bb) = (Array2::from_shape_vec((m, k), a.clone()).unwrap(), Array2::from_shape_vec((k, n), b.clone()).unwrap());
        group.bench_function(BenchmarkId::new("ndarray-matrixmultiply", &id), |bch| bch.iter(|| aa.dot(&bb)));
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
