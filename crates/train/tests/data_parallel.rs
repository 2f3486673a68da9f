//! Data-parallel SAM against one replica: 4 replicas × batch 16 over real TCP rings (loopback,
//! one thread per replica) must follow the trajectory of 1 replica × batch 64 when the ascent
//! gradient is synchronised, and must not when it is not (m-sharpness). SmallCnn has no batch
//! norm, so the only legitimate difference is floating-point summation order.

use std::net::{SocketAddr, TcpListener};
use std::time::Duration;

use ringsam_models::ModelConfig;
use ringsam_tensor::Tensor;
use ringsam_train::cheap_sam::SamSchedule;
use ringsam_train::cluster::{Cluster, ClusterConfig, Transport};
use ringsam_train::grad_sync::BucketPlan;
use ringsam_train::{BatchShare, SamStep, StepConfig};

const STEPS: usize = 20;
const GLOBAL: usize = 64;
const SIDE: usize = 8;
const CLASSES: usize = 10;

/// Deterministic images and labels: `STEPS` global batches of `GLOBAL` 1-channel 8×8 images.
fn data() -> (Vec<f32>, Vec<u32>) {
    let n = STEPS * GLOBAL;
    let mut x = 0x2545_f491_4f6c_dd1du64;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        (x >> 40) as f32 / (1u64 << 24) as f32
    };
    let labels: Vec<u32> = (0..n).map(|i| (i * 7 % CLASSES) as u32).collect();
    // Images carry a class-dependent pattern plus noise, so the model learns something.
    let images = (0..n).flat_map(|i| (0..SIDE * SIDE).map(move |p| (i, p)).collect::<Vec<_>>()).map(|(i, p)| {
        let c = labels[i] as usize;
        (if p % CLASSES == c { 1.0 } else { 0.0 }) + 0.5 * next() - 0.25
    });
    (images.collect(), labels)
}

/// Examples `lo..hi` as a `(1, N, 8, 8)` batch.
fn batch(images: &[f32], labels: &[u32], lo: usize, hi: usize) -> (Tensor, Vec<u32>) {
    let x = Tensor::from_vec(&[1, hi - lo, SIDE, SIDE], images[lo * SIDE * SIDE..hi * SIDE * SIDE].to_vec()).unwrap();
    (x, labels[lo..hi].to_vec())
}

fn step_config(sync_perturbations: bool) -> StepConfig {
    StepConfig { rho: 0.05, weight_decay: 5e-4, label_smoothing: 0.1, seed: 3, sync_perturbations, ..StepConfig::default() }
}

fn model_cfg() -> ModelConfig {
    ModelConfig { num_classes: CLASSES, in_channels: 1 }
}

/// One replica on the global batches; `sam_m` gives each chunk of that many examples its own
/// ascent (what replica groups of that many examples compute together).
fn single_replica(sam_m: Option<usize>) -> Vec<f32> {
    single_replica_with(StepConfig { sam_m, ..step_config(true) })
}

fn single_replica_with(cfg: StepConfig) -> Vec<f32> {
    single_replica_in(cfg, 1)
}

/// One replica computing each global batch as `units` micro-batches.
fn single_replica_in(cfg: StepConfig, units: usize) -> Vec<f32> {
    single_model_in("SmallCnn", cfg, units, STEPS).0
}

/// [`single_replica_in`] for any model and number of steps; parameters and statistics.
fn single_model_in(model: &str, cfg: StepConfig, units: usize, steps: usize) -> (Vec<f32>, Vec<f32>) {
    single_model_on(model, cfg, units, steps, false)
}

/// [`single_model_in`], on an emulated GPU when `on_gpu`.
fn single_model_on(model: &str, cfg: StepConfig, units: usize, steps: usize, on_gpu: bool) -> (Vec<f32>, Vec<f32>) {
    let (images, labels) = data();
    let mut st = SamStep::new(model, &model_cfg(), cfg, None, BatchShare::alone(units)).unwrap();
    if on_gpu {
        st.to_device(model, &ringsam_kernels_emu::emulated_gpu()).unwrap();
    }
    for s in 0..steps {
        let (x, y) = batch(&images, &labels, s * GLOBAL, (s + 1) * GLOBAL);
        st.step(&x, &y, 0.1).unwrap();
    }
    st.sync_host().unwrap();
    (st.params().to_vec(), st.state().to_vec())
}

/// Held by every test here while its rings run: a probed port is free only until something binds
/// it, so parallel tests could otherwise race for the same port.
fn ports_lock() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    LOCK.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// `n` addresses whose port and the next (the group ring's) are free.
fn free_addrs(n: usize) -> Vec<SocketAddr> {
    let mut held = Vec::new();
    while held.len() < n {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let a = l.local_addr().unwrap();
        if let Ok(next) = TcpListener::bind(("127.0.0.1", a.port() + 1)) {
            held.push((a, l, next));
        }
    }
    held.into_iter().map(|(a, _, _)| a).collect()
}

/// Trains `world` replicas on their shares of the same global batches; returns each one's parameters.
fn replicas(world: usize, sync_perturbations: bool, group_size: Option<usize>) -> Vec<Vec<f32>> {
    replicas_with(world, group_size, StepConfig { sync_perturbations, ..step_config(true) }, world)
}

/// `world` replicas sharing each global batch as `units` micro-batches ([`BatchShare`]).
fn replicas_with(world: usize, group_size: Option<usize>, step_cfg: StepConfig, units: usize) -> Vec<Vec<f32>> {
    models_on("SmallCnn", world, group_size, step_cfg, units, STEPS, false).into_iter().map(|(p, _)| p).collect()
}

/// [`replicas_with`] for any model and number of steps, every replica's step on its own
/// emulated GPU when `on_gpu`; each replica's parameters and statistics.
fn models_on(
    model: &'static str,
    world: usize,
    group_size: Option<usize>,
    step_cfg: StepConfig,
    units: usize,
    steps: usize,
    on_gpu: bool,
) -> Vec<(Vec<f32>, Vec<f32>)> {
    let peers = free_addrs(world);
    let handles: Vec<_> = (0..world)
        .map(|rank| {
            let peers = peers.clone();
            std::thread::spawn(move || {
                let (images, labels) = data();
                let cfg = ClusterConfig {
                    rank,
                    peers,
                    group_size,
                    transport: Transport::Tcp { secret: b"data-parallel-test-secret".to_vec() },
                    connect_timeout: Duration::from_secs(20),
                    peer_timeout: Duration::from_secs(20),
                    on_refusal: None,
                    generation: 0,
                    colocated: None,
                };
                let cluster = Cluster::connect(&cfg, &std::sync::atomic::AtomicBool::new(false)).unwrap();
                // Small buckets, so several are in flight during backward.
                let plan = BucketPlan { first: 700, rest: 1500, overlap: true };
                let share = BatchShare::new(units, rank, world).unwrap();
                let mut st = SamStep::new(model, &model_cfg(), step_cfg, Some((cluster, plan)), share).unwrap();
                if on_gpu {
                    st.to_device(model, &ringsam_kernels_emu::emulated_gpu()).unwrap();
                }
                let mine = share.examples(GLOBAL);
                for s in 0..steps {
                    let (x, y) = batch(&images, &labels, s * GLOBAL + mine.start, s * GLOBAL + mine.end);
                    let r = st.step(&x, &y, 0.1).unwrap();
                    assert!(r.descent_exchange.bytes > 0);
                    let synced_ascent = step_cfg.sync_perturbations && step_cfg.rho > 0.0 && step_cfg.schedule.sam_at(s as u64);
                    assert_eq!(r.ascent_exchange.bytes > 0, synced_ascent);
                }
                st.close();
                st.sync_host().unwrap();
                (st.params().to_vec(), st.state().to_vec())
            })
        })
        .collect();
    handles.into_iter().map(|h| h.join().unwrap()).collect()
}

fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

/// The stated tolerance: f32 summation order alone, accumulated over 20 steps (measured: 3e-8;
/// without synchronised ascents the difference is 5e-3).
const TOLERANCE: f32 = 1e-6;

#[test]
fn four_replicas_follow_one_replica_when_perturbations_are_synchronised() {
    let _ports = ports_lock();
    let one = single_replica(None);
    let four = replicas(4, true, None);
    for (r, p) in four.iter().enumerate() {
        assert_eq!(p, &four[0], "replica {r} differs from replica 0: every replica must hold identical parameters");
    }
    let d = max_diff(&one, &four[0]);
    assert!(d <= TOLERANCE, "4 × 16 drifted {d} from 1 × 64 (tolerance {TOLERANCE})");
    // And they trained: the parameters moved far more than the tolerance.
    let init = SamStep::new("SmallCnn", &model_cfg(), step_config(true), None, BatchShare::alone(1)).unwrap().params().to_vec();
    assert!(max_diff(&init, &one) > 1000.0 * TOLERANCE);
}

#[test]
fn unsynchronised_perturbations_give_m_sharpness_not_the_large_batch_trajectory() {
    let _ports = ports_lock();
    let one = single_replica(None);
    let four = replicas(4, false, None);
    for p in &four[1..] {
        assert_eq!(p, &four[0], "the descent gradient is still averaged: replicas stay identical");
    }
    let d = max_diff(&one, &four[0]);
    assert!(d > 100.0 * TOLERANCE, "without synchronised ascents the trajectory should differ (max diff {d})");
    // It is m-sharpness with m = 16, the per-replica batch: one replica with --sam_m 16 agrees.
    let m16 = single_replica(Some(16));
    let d = max_diff(&m16, &four[0]);
    assert!(d <= TOLERANCE, "4 unsynchronised replicas drifted {d} from sam_m = 16 (tolerance {TOLERANCE})");
}

#[test]
fn inner_groups_average_the_ascent_within_the_group_only() {
    let _ports = ports_lock();
    let world_sync = replicas(4, true, None);
    let grouped = replicas(4, true, Some(2));
    for p in &grouped[1..] {
        assert_eq!(p, &grouped[0], "the descent gradient is averaged over the world: replicas stay identical");
    }
    let d = max_diff(&world_sync[0], &grouped[0]);
    assert!(d > 100.0 * TOLERANCE, "groups of 2 should ascend differently from the whole world (max diff {d})");
    // Groups of 2 replicas × 16 examples ascend on 32 examples together: sam_m = 32 on one replica.
    let m32 = single_replica(Some(32));
    let d = max_diff(&m32, &grouped[0]);
    assert!(d <= TOLERANCE, "groups of 2 drifted {d} from sam_m = 32 (tolerance {TOLERANCE})");
}

#[test]
fn gradient_accumulation_matches_the_whole_batch_alone_and_across_replicas() {
    let _ports = ports_lock();
    let one = single_replica(None);
    let accumulated = single_replica_in(step_config(true), 4);
    let d = max_diff(&one, &accumulated);
    assert!(d <= TOLERANCE, "4 micro-batches of 16 drifted {d} from one batch of 64 (tolerance {TOLERANCE})");
    // 2 replicas × 2 micro-batches × 16: the exchange carries the summed micro-batch gradients.
    let two = replicas_with(2, None, step_config(true), 4);
    assert_eq!(two[0], two[1]);
    let d = max_diff(&one, &two[0]);
    assert!(d <= TOLERANCE, "2 replicas × 2 micro-batches drifted {d} from one batch of 64 (tolerance {TOLERANCE})");
}

/// `--sam_every` and LookSAM data-parallel: the SAM steps exchange both gradients, the steps
/// between one, and LookSAM's direction (from world-averaged gradients) is every replica's.
#[test]
fn cheaper_sam_replicas_follow_one_replica() {
    let _ports = ports_lock();
    let sam = single_replica(None);
    let mut finals = Vec::new();
    for schedule in [SamSchedule::Every(3), SamSchedule::LookSam { k: 3, alpha: 0.7 }] {
        let cfg = StepConfig { schedule, ..step_config(true) };
        let one = single_replica_with(cfg);
        let four = replicas_with(4, None, cfg, 4);
        for p in &four[1..] {
            assert_eq!(p, &four[0], "{schedule:?}: replicas must hold identical parameters");
        }
        let d = max_diff(&one, &four[0]);
        assert!(d <= TOLERANCE, "{schedule:?}: 4 × 16 drifted {d} from 1 × 64 (tolerance {TOLERANCE})");
        let d = max_diff(&sam, &one);
        assert!(d > 100.0 * TOLERANCE, "{schedule:?} should differ from SAM on every step (max diff {d})");
        finals.push(one);
    }
    let d = max_diff(&finals[0], &finals[1]);
    assert!(d > 100.0 * TOLERANCE, "LookSAM's reused direction should change the steps between (max diff {d})");
}

#[test]
fn replicas_refuse_to_start_from_different_positions_and_detect_divergence() {
    let _ports = ports_lock();
    let peers = free_addrs(2);
    let handles: Vec<_> = (0..2)
        .map(|rank| {
            let peers = peers.clone();
            std::thread::spawn(move || {
                let cfg = ClusterConfig {
                    rank,
                    peers,
                    group_size: None,
                    transport: Transport::Tcp { secret: b"data-parallel-test-secret".to_vec() },
                    connect_timeout: Duration::from_secs(20),
                    peer_timeout: Duration::from_secs(20),
                    on_refusal: None,
                    generation: 0,
                    colocated: None,
                };
                let mut c = Cluster::connect(&cfg, &std::sync::atomic::AtomicBool::new(false)).unwrap();
                let params = vec![0.5f32; 100];
                // Same parameters and position: fine.
                ringsam_train::replica::check_same_start(&mut c, &params, [7, 1, 3]).unwrap();
                // Rank 1 resumed one batch further: both refuse.
                let at = if rank == 1 { [8, 1, 4] } else { [7, 1, 3] };
                let err = ringsam_train::replica::check_same_start(&mut c, &params, at).unwrap_err().to_string();
                assert!(err.contains("different checkpoints or positions"), "{err}");
                // One parameter differs in its last bit: the fingerprints catch it.
                let mut mine = params.clone();
                if rank == 0 {
                    mine[99] = f32::from_bits(mine[99].to_bits() + 1);
                }
                let err = ringsam_train::replica::check_identical(&mut c, &mine, 5).unwrap_err().to_string();
                assert!(err.contains("fingerprints differ at step 5"), "{err}");
                c.close();
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
}

#[test]
fn any_world_up_to_max_replicas_follows_the_same_trajectory() {
    // Four micro-batches of 16 per step (--max_replicas 4) computed by 1, 2 or 3 replicas: with
    // 3, one replica takes two micro-batches. Synchronised ascents: the large-batch trajectory.
    let _ports = ports_lock();
    let one = single_replica_in(step_config(true), 4);
    for world in [2, 3] {
        let some = replicas_with(world, None, step_config(true), 4);
        for p in &some[1..] {
            assert_eq!(p, &some[0], "world {world}: replicas must stay identical");
        }
        let d = max_diff(&one, &some[0]);
        assert!(d <= TOLERANCE, "world {world} of 4 micro-batches drifted {d} from one replica (tolerance {TOLERANCE})");
    }
    // Unsynchronised: every micro-batch ascends alone (m = 16) whatever holds it.
    let unsynced = StepConfig { sync_perturbations: false, ..step_config(true) };
    let m16 = single_replica(Some(16));
    for (world, units) in [(1, 4), (3, 4), (4, 4)] {
        let p = if world == 1 { single_replica_in(unsynced, units) } else { replicas_with(world, None, unsynced, units).swap_remove(0) };
        let d = max_diff(&m16, &p);
        assert!(d <= TOLERANCE, "world {world}, unsynchronised: drifted {d} from sam_m = 16 (tolerance {TOLERANCE})");
    }
}

#[test]
fn batch_norm_statistics_do_not_depend_on_the_world() {
    // WRN-10-1 has batch norm: each of the 4 micro-batches is a batch-norm batch, and every step
    // averages their running statistics over the world, so the replicas of a world hold the same
    // statistics at every step, and 1, 2 or 3 replicas agree.
    //
    // Across worlds, one step is compared: it averages the statistics completely (running
    // statistics feed nothing in training passes), and later steps would test ReLU kinks instead.
    // A pre-activation within rounding of zero flips its mask when the summation order changes:
    // on an AMD EPYC host (AVX2) one such flip in step 2 — one of 64 bias gradients of a fused
    // batch norm and ReLU, the micro-batch's loss equal to 1e-7 — moved world 2's parameters
    // 1.2e-3 from world 1's after step 2 and 4.8e-3 after step 3, while every step-1 state
    // agreed within 6e-8. Within a world the summation order is fixed, so no kink can part them.
    let _ports = ports_lock();
    let (params, state) = single_model_in("WideResnet10x1", step_config(true), 4, 1);
    for world in [2, 3] {
        let later = models_on("WideResnet10x1", world, None, step_config(true), 4, 3, false);
        for (p, s) in &later[1..] {
            assert_eq!((p, s), (&later[0].0, &later[0].1), "world {world}: replicas must hold identical parameters and statistics");
        }
        let some = models_on("WideResnet10x1", world, None, step_config(true), 4, 1, false);
        let (dp, ds) = (max_diff(&params, &some[0].0), max_diff(&state, &some[0].1));
        eprintln!("world {world}: parameters {dp:e}, statistics {ds:e}");
        assert!(dp <= BN_TOLERANCE && ds <= BN_TOLERANCE, "world {world}: drifted {dp} (parameters), {ds} (statistics)");
    }
}

/// Batch norm's reductions add summation-order differences of their own (measured on one host:
/// 1.2e-7 on the parameters and 2.4e-7 on the statistics after 3 steps; 6e-8 on both after one
/// step on another).
const BN_TOLERANCE: f32 = 1e-6;

/// Replicas on GPUs (emulated here) exchange both SAM gradients straight from device memory
/// (crate::device_grad_sync): 4 × 16 must hold identical parameters and follow 1 × 64 on one
/// device; both follow the CPU within the emulated kernels' summation-order spread.
#[test]
fn replicas_on_emulated_gpus_follow_one_replica_of_the_whole_batch() {
    let _ports = ports_lock();
    const STEPS_ON_GPU: usize = 6;
    let one_gpu = single_model_on("SmallCnn", step_config(true), 1, STEPS_ON_GPU, true).0;
    let four = models_on("SmallCnn", 4, None, step_config(true), 4, STEPS_ON_GPU, true);
    for (r, (p, _)) in four.iter().enumerate() {
        assert_eq!(p, &four[0].0, "replica {r} differs from replica 0 on the device");
    }
    let d = max_diff(&one_gpu, &four[0].0);
    eprintln!("4 emulated GPUs × 16 against 1 × 64: {d:e}");
    assert!(d <= TOLERANCE, "4 × 16 on devices drifted {d} from 1 × 64 on one (tolerance {TOLERANCE})");
    let cpu = single_model_in("SmallCnn", step_config(true), 1, STEPS_ON_GPU).0;
    let d = max_diff(&cpu, &four[0].0);
    eprintln!("4 emulated GPUs × 16 against the CPU's 1 × 64: {d:e}");
    assert!(d <= DEVICE_TOLERANCE, "4 × 16 on devices drifted {d} from the CPU (tolerance {DEVICE_TOLERANCE})");
    // Unsynchronised ascents, one micro-batch per replica: each ascends alone (m = 16).
    let unsynced = StepConfig { sync_perturbations: false, ..step_config(true) };
    let m16 = single_model_in("SmallCnn", StepConfig { sam_m: Some(16), ..step_config(true) }, 1, STEPS_ON_GPU).0;
    let apart = models_on("SmallCnn", 4, None, unsynced, 4, STEPS_ON_GPU, true);
    let d = max_diff(&m16, &apart[0].0);
    assert!(d <= DEVICE_TOLERANCE, "unsynchronised on devices drifted {d} from sam_m = 16 (tolerance {DEVICE_TOLERANCE})");
    let d = max_diff(&apart[0].0, &four[0].0);
    assert!(d > 100.0 * TOLERANCE, "unsynchronised ascents should differ from synchronised ones (max diff {d})");
}

/// The device check in miniature: replicas with batch norm (each micro-batch its own
/// batch-norm batch, statistics averaged over the world every step), on emulated GPUs, equal
/// one device computing the same micro-batches one after the other (`--grad_accum_steps`), and
/// both equal the CPU's.
#[test]
fn batch_norm_replicas_on_emulated_gpus_equal_accumulated_micro_batches() {
    let _ports = ports_lock();
    const BN_STEPS: usize = 2;
    let (p_cpu, s_cpu) = single_model_in("WideResnet10x1", step_config(true), 2, BN_STEPS);
    let (p_acc, s_acc) = single_model_on("WideResnet10x1", step_config(true), 2, BN_STEPS, true);
    let two = models_on("WideResnet10x1", 2, None, step_config(true), 2, BN_STEPS, true);
    assert_eq!(two[0], two[1], "replicas must hold identical parameters and statistics");
    let (dp, ds) = (max_diff(&p_acc, &two[0].0), max_diff(&s_acc, &two[0].1));
    eprintln!("2 emulated GPUs against 1 with 2 micro-batches: parameters {dp:e}, statistics {ds:e}");
    assert!(dp <= BN_TOLERANCE && ds <= BN_TOLERANCE, "drifted {dp} (parameters), {ds} (statistics)");
    let (dp, ds) = (max_diff(&p_cpu, &p_acc), max_diff(&s_cpu, &s_acc));
    eprintln!("1 emulated GPU with 2 micro-batches against the CPU: parameters {dp:e}, statistics {ds:e}");
    assert!(dp <= DEVICE_TOLERANCE && ds <= DEVICE_TOLERANCE, "drifted {dp} (parameters), {ds} (statistics) from the CPU");
    let (p_one, _) = single_model_on("WideResnet10x1", step_config(true), 1, BN_STEPS, true);
    assert!(max_diff(&p_one, &p_acc) > 100.0 * BN_TOLERANCE, "two batch-norm batches should differ from one");
}

/// The emulated device's kernels sum in another order than the CPU engine's.
const DEVICE_TOLERANCE: f32 = 1e-4;
