//! `ringsam train --device cuda` as the trainer runs it, on the emulated device: a run of one
//! epoch of a tiny dataset must follow the CPU run (same data order, same draws; only the
//! order of float sums differs), alone or as two replicas on two devices, its checkpoint must
//! hold the device's state, its evaluation must run on the device, and what the GPU step does
//! not do yet must be refused by flag.

use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use ringsam_train::TrainError;
use ringsam_train::checkpoint::{load, newest_checkpoint};
use ringsam_train::config::TrainConfig;
use ringsam_train::eval::evaluate_checkpoint;
use ringsam_train::run::{RunOptions, RunSummary};

/// 64 training and 32 test images, 8×8 grey, of 10 classes (the class a bright column): a
/// dataset small enough for the emulated device (it runs each block's threads as the host's).
fn tiny_arrays(dir: &std::path::Path) -> std::path::PathBuf {
    use safetensors::{Dtype, tensor::TensorView};
    let split = |n: usize, salt: usize| {
        let labels: Vec<u8> = (0..n).map(|i| ((i * 7 + salt) % 10) as u8).collect();
        let pixels: Vec<u8> =
            (0..n * 64).map(|p| if p % 8 == labels[p / 64] as usize % 8 { 200 } else { ((p * 37 + salt) % 50) as u8 }).collect();
        (pixels, labels)
    };
    let ((train_x, train_y), (test_x, test_y)) = (split(64, 0), split(32, 3));
    let views = vec![
        ("train_images", TensorView::new(Dtype::U8, vec![64, 8, 8, 1], &train_x).unwrap()),
        ("train_labels", TensorView::new(Dtype::U8, vec![64], &train_y).unwrap()),
        ("test_images", TensorView::new(Dtype::U8, vec![32, 8, 8, 1], &test_x).unwrap()),
        ("test_labels", TensorView::new(Dtype::U8, vec![32], &test_y).unwrap()),
    ];
    let meta = std::collections::HashMap::from([("num_classes".to_string(), "10".to_string())]);
    let path = dir.join("tiny.safetensors");
    std::fs::write(&path, safetensors::serialize(views, Some(meta)).unwrap()).unwrap();
    path
}

fn config(out: &std::path::Path, extra: &[&str]) -> TrainConfig {
    let data = tiny_arrays(out);
    let mut args = vec!["--dataset", "arrays", "--data_dir", data.to_str().unwrap(), "--model_name", "SmallCnn"];
    args.extend(["--batch_size", "32", "--num_epochs", "1", "--image_level_augmentations", "none", "--sam_rho", "0.05"]);
    args.extend(["--output_dir", out.to_str().unwrap()]);
    args.extend(extra);
    TrainConfig::from_args(args, None).unwrap()
}
fn run(cfg: &TrainConfig, gpu: Option<Arc<ringsam_kernels::Gpu>>) -> Result<(RunSummary, Vec<String>), TrainError> {
    run_replica(cfg, gpu, None)
}

fn run_replica(
    cfg: &TrainConfig,
    gpu: Option<Arc<ringsam_kernels::Gpu>>,
    cluster: Option<ringsam_train::cluster::Cluster>,
) -> Result<(RunSummary, Vec<String>), TrainError> {
    let opts = RunOptions { progress: false, stop: Arc::new(AtomicBool::new(false)), memory_limit: None, gpu };
    let mut lines = Vec::new();
    let summary = ringsam_train::run::train_replica(cfg, &opts, cluster, &mut |l| lines.push(l.to_string()))?;
    Ok((summary, lines))
}

fn final_params(cfg: &TrainConfig, summary: &RunSummary) -> Vec<f32> {
    let model = ringsam_models::build(&cfg.model_name, &ringsam_models::ModelConfig { num_classes: 10, in_channels: 1 }).unwrap();
    let dir = newest_checkpoint(&summary.run_dir).expect("a final checkpoint");
    load(&dir, model.layout(), model.state_layout()).unwrap().params
}

#[test]
fn an_epoch_on_the_emulated_device_follows_the_cpu_run_and_checkpoints_its_state() {
    let (cpu_dir, dev_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (cpu_cfg, dev_cfg) = (config(cpu_dir.path(), &[]), config(dev_dir.path(), &[]));
    let (cpu, _) = run(&cpu_cfg, None).unwrap();
    let (dev, lines) = run(&dev_cfg, Some(ringsam_kernels_emu::emulated_gpu())).unwrap();
    assert!(lines.iter().any(|l| l.starts_with("the step runs on emulated")), "{lines:?}");
    assert_eq!(dev.steps, cpu.steps);
    let (want, got) = (final_params(&cpu_cfg, &cpu), final_params(&dev_cfg, &dev));
    let worst = got.iter().zip(&want).map(|(&a, &b)| (a - b).abs() / b.abs().max(1.0)).fold(0.0f32, f32::max);
    assert!(worst < 1e-4, "parameters after {} steps differ by {worst:e}", dev.steps);
    let (l_cpu, l_dev) = (cpu.test_loss.unwrap(), dev.test_loss.unwrap());
    assert!((l_cpu - l_dev).abs() < 1e-4 * l_cpu.max(1.0), "test loss {l_dev} on the device, {l_cpu} on the CPU");
    // `ringsam eval --device`: the CPU run's checkpoint evaluated on the device as on the CPU.
    let dir = newest_checkpoint(&cpu.run_dir).unwrap();
    let (_, on_cpu) = evaluate_checkpoint(&dir, None, 16, None).unwrap();
    let (_, on_dev) = evaluate_checkpoint(&dir, None, 16, Some(&ringsam_kernels_emu::emulated_gpu())).unwrap();
    assert_eq!((on_dev.examples, on_dev.error_rate), (on_cpu.examples, on_cpu.error_rate));
    assert!((on_dev.loss - on_cpu.loss).abs() < 1e-5 * on_cpu.loss.max(1.0), "{on_dev:?} vs {on_cpu:?}");
    assert!((on_cpu.loss - l_cpu).abs() < 1e-5 * l_cpu.max(1.0), "the evaluation training ran: {l_cpu}, now {}", on_cpu.loss);
}

#[test]
fn what_the_gpu_step_does_not_do_yet_is_refused_by_flag() {
    let dir = tempfile::tempdir().unwrap();
    let one_ascent_each = &["--grad_accum_steps", "2", "--sync_perturbations", "false"][..];
    for (flags, named) in [(&["--ema_decay", "0.999"][..], "--ema_decay"), (one_ascent_each, "--sync_perturbations=false")] {
        let cfg = config(dir.path(), flags);
        match run(&cfg, Some(ringsam_kernels_emu::emulated_gpu())) {
            Err(TrainError::Config(why)) => assert!(why.contains(named) && why.contains("--device cpu"), "{why}"),
            other => panic!("{flags:?} on the device: {:?}", other.map(|(s, _)| s.steps)),
        }
    }
}

/// The trainer's order on a device (step i launched, batch i + 1 staged into the other pinned
/// slot, step i finished) gives bitwise what steps taken one at a time give; a batch staged
/// twice is replaced; calls out of order are refused by name.
#[test]
fn a_batch_staged_while_a_step_runs_changes_nothing() {
    use ringsam_tensor::Tensor;
    use ringsam_train::device_step::DeviceStep;
    use ringsam_train::step::StepConfig;
    let gpu = ringsam_kernels_emu::emulated_gpu();
    let model = ringsam_models::ModelConfig { num_classes: 10, in_channels: 1 };
    let cfg = StepConfig { rho: 0.05, ..StepConfig::default() };
    let batch = |i: usize| {
        let x: Vec<f32> = (0..4 * 64).map(|p| ((p * 31 + i * 17) % 23) as f32 / 23.0 - 0.5).collect();
        (Tensor::from_vec(&[1, 4, 8, 8], x).unwrap(), (0..4).map(|e| ((e * 3 + i) % 10) as u32).collect::<Vec<u32>>())
    };
    let batches: Vec<_> = (0..4).map(batch).collect();
    let mut alone = DeviceStep::new("SmallCnn", &model, cfg, &gpu).unwrap();
    let want: Vec<f32> = batches.iter().map(|(x, l)| alone.step(x, l, 0.1, None).unwrap().loss).collect();

    let mut piped = DeviceStep::new("SmallCnn", &model, cfg, &gpu).unwrap();
    piped.stage(&batches[3].0, &batches[3].1).unwrap(); // replaced by the next line's
    piped.stage(&batches[0].0, &batches[0].1).unwrap();
    let mut got = Vec::new();
    for i in 0..4 {
        piped.launch(0.1, None).unwrap();
        if let Some((x, l)) = batches.get(i + 1) {
            piped.stage(x, l).unwrap();
        }
        got.push(piped.finish(None).unwrap().loss);
    }
    assert_eq!(got.iter().map(|v| v.to_bits()).collect::<Vec<_>>(), want.iter().map(|v| v.to_bits()).collect::<Vec<_>>());
    assert!(piped.params().unwrap().iter().zip(&alone.params().unwrap()).all(|(a, b)| a.to_bits() == b.to_bits()));

    let refused = |r: Result<(), TrainError>, what: &str| {
        let e = r.unwrap_err().to_string();
        assert!(e.contains(what), "{e}");
    };
    refused(piped.launch(0.1, None), "no batch staged");
    refused(piped.finish(None).map(drop), "not launched");
    piped.stage(&batches[0].0, &batches[0].1).unwrap();
    piped.launch(0.1, None).unwrap();
    refused(piped.launch(0.1, None), "before the one before it was finished");
    piped.finish(None).unwrap();
    // An ascent per micro-batch (unsynchronised, two micro-batches on one replica, as an elastic
    // generation of another size can bring about after the step was built) is refused at launch.
    let unsynced = StepConfig { sync_perturbations: false, ..cfg };
    let mut apart = DeviceStep::new("SmallCnn", &model, unsynced, &gpu).unwrap();
    apart.set_peers(ringsam_train::BatchShare::alone(2), 0..1, None);
    apart.stage(&batches[0].0, &batches[0].1).unwrap();
    refused(apart.launch(0.1, None), "--sync_perturbations=false with 2 micro-batches over 1 replicas");
    // A data-parallel step needs its rings.
    apart.set_peers(ringsam_train::BatchShare::alone(1), 0..1, Some(ringsam_train::grad_sync::BucketPlan::default()));
    apart.stage(&batches[0].0, &batches[0].1).unwrap();
    refused(apart.launch(0.1, None), "without its rings");
}

/// Two replicas, each on its own emulated device, joined by a TCP ring: the trainer's
/// data-parallel loop on devices (both SAM gradients leave device memory bucket by bucket, the
/// replicas vote, compare fingerprints and evaluate) follows one CPU replica of the whole batch.
#[test]
fn two_replicas_on_emulated_devices_train_as_one_cpu_replica() {
    use ringsam_train::cluster::{Cluster, ClusterConfig, Transport};
    let (cpu_dir, dev_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let cpu_cfg = config(cpu_dir.path(), &[]);
    let (cpu, _) = run(&cpu_cfg, None).unwrap();
    let dev_cfg = config(dev_dir.path(), &["--check_replicas_every", "1"]);
    let listeners: Vec<_> = (0..2).map(|_| std::net::TcpListener::bind("127.0.0.1:0").unwrap()).collect();
    let peers: Vec<_> = listeners.iter().map(|l| l.local_addr().unwrap()).collect();
    drop(listeners);
    let replicas: Vec<_> = (0..2)
        .map(|rank| {
            let (cfg, peers) = (dev_cfg.clone(), peers.clone());
            std::thread::spawn(move || {
                let ring = ClusterConfig {
                    rank,
                    peers,
                    group_size: None,
                    transport: Transport::Tcp { secret: b"device-train-test-secret".to_vec() },
                    connect_timeout: std::time::Duration::from_secs(20),
                    peer_timeout: std::time::Duration::from_secs(20),
                    on_refusal: None,
                    generation: 0,
                    colocated: None,
                };
                let cluster = Cluster::connect(&ring, &AtomicBool::new(false)).unwrap();
                run_replica(&cfg, Some(ringsam_kernels_emu::emulated_gpu()), Some(cluster))
            })
        })
        .collect();
    let results: Vec<_> = replicas.into_iter().map(|h| h.join().unwrap().unwrap()).collect();
    let (dev, lines) = &results[0];
    assert_eq!(dev.steps, cpu.steps);
    assert!(lines.iter().any(|l| l.starts_with("the step runs on emulated")), "{lines:?}");
    assert!(lines.iter().any(|l| l.contains("descent exchange")), "{lines:?}");
    let (want, got) = (final_params(&cpu_cfg, &cpu), final_params(&dev_cfg, dev));
    let worst = got.iter().zip(&want).map(|(&a, &b)| (a - b).abs() / b.abs().max(1.0)).fold(0.0f32, f32::max);
    assert!(worst < 1e-4, "two device replicas' parameters after {} steps differ by {worst:e} from one CPU replica's", dev.steps);
    let (l_cpu, l_dev) = (cpu.test_loss.unwrap(), dev.test_loss.unwrap());
    assert!((l_cpu - l_dev).abs() < 1e-4 * l_cpu.max(1.0), "test loss {l_dev} on two devices, {l_cpu} on the CPU");
}
