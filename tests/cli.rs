//! The command line: outputs users parse, and errors users read.

use crate::util::{ringsam, stdout_ok};

#[test]
fn models_json_lists_parameter_counts() {
    let rows: serde_json::Value = serde_json::from_str(&stdout_ok(&ringsam(&["models", "--json"]))).unwrap();
    let wrn = rows.as_array().unwrap().iter().find(|r| r["name"] == "WideResnet28x10").expect("WideResnet28x10 listed");
    assert_eq!(wrn["params"], 36_220_634);
    assert_eq!(wrn["num_classes"], 10);
    assert_eq!(wrn["input_size"], 32);
    let rows: serde_json::Value = serde_json::from_str(&stdout_ok(&ringsam(&["models", "--json", "--num-classes", "100"]))).unwrap();
    let wrn = rows.as_array().unwrap().iter().find(|r| r["name"] == "WideResnet28x10").unwrap();
    assert_eq!(wrn["params"], 36_278_324);
}

#[test]
fn bench_step_json_reports_medians() {
    let out = ringsam(&[
        "--threads",
        "1",
        "bench",
        "step",
        "--model",
        "WideResnet10x1",
        "--batch",
        "4",
        "--image-size",
        "8",
        "--iters",
        "2",
        "--json",
    ]);
    let r: serde_json::Value = serde_json::from_str(stdout_ok(&out).trim()).unwrap();
    assert_eq!(r["model"], "WideResnet10x1");
    assert_eq!(r["batch"], 4);
    assert_eq!(r["threads"], 1);
    for key in ["sgd_ms", "sam_ms", "sgd_images_per_s", "sam_images_per_s", "sgd_gflops_per_s"] {
        assert!(r[key].as_f64().unwrap() > 0.0, "{key}: {}", r[key]);
    }
    // The cheaper schedules, each timed over 2 whole cycles.
    let cheaper = r["cheaper"].as_array().unwrap();
    let names: Vec<&str> = cheaper.iter().map(|c| c["variant"].as_str().unwrap()).collect();
    assert_eq!(names, ["sam_every_2", "sam_every_5", "looksam_5"]);
    for c in cheaper {
        assert_eq!(c["samples_ms"].as_array().unwrap().len(), 2);
        assert!(c["ms_per_step"].as_f64().unwrap() > 0.0 && c["over_sam"].as_f64().unwrap() > 0.0, "{c}");
    }
    let out = ringsam(&["bench", "step", "--cheaper", "sam_every:1", "--iters", "1"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--cheaper sam_every:1"));
    assert_eq!(r["sgd_samples_ms"].as_array().unwrap().len(), 2);
}

#[test]
fn unknown_model_is_a_clear_error_with_exit_code_2() {
    let out = ringsam(&["bench", "step", "--model", "WideResnet99x1", "--iters", "1"]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("WideResnet99x1") && err.contains("6n+4"), "{err}");
}

/// The QUIC driver flag, on the commands that form rings: an unknown driver is a usage error
/// that names the choices, and the driver a bench run used is in its table's header.
#[test]
fn an_unknown_quic_driver_is_refused_and_the_one_used_is_named() {
    for cmd in [&["worker", "--rank", "0", "--world_size", "2", "--peers", "127.0.0.1:1,127.0.0.1:2"][..], &["bench", "allreduce"][..]] {
        let out = ringsam(&[cmd, &["--quic_driver", "fast"]].concat());
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{cmd:?}: {err}");
        assert!(err.contains("expected quinn or direct"), "{cmd:?}: {err}");
    }
    let _ports = crate::util::ports_lock();
    let out = stdout_ok(&ringsam(&[
        "bench",
        "allreduce",
        "--nproc",
        "2",
        "--transport",
        "quic",
        "--quic_driver",
        "quinn",
        "--sizes",
        "4K",
        "--iters",
        "1",
    ]));
    assert!(out.contains("# QUIC: quinn driver,"), "{out}");
}

#[test]
fn zero_threads_is_rejected() {
    let out = ringsam(&["--threads", "0", "models"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("thread count must be at least 1"));
}

#[test]
fn cuda_device_without_cuda_is_a_clear_error() {
    // Built without the `cuda` feature (the test build), `--device cuda` must say so, not panic.
    let out = ringsam(&["bench", "step", "--device", "cuda", "--iters", "1"]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--features cuda") || err.contains("not implemented on CUDA"), "{err}");
    // The GPU self-tests too, and they refuse the CPU.
    for (what, device) in [("kernels", "cuda"), ("kernels", "cpu"), ("engine", "cuda"), ("engine", "cpu")] {
        let out = ringsam(&["selftest", what, "--device", device]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{err}");
        assert!(err.contains("--features cuda") || err.contains("checks a GPU"), "{err}");
    }
}

#[test]
fn workers_per_gpu_are_refused_clearly_without_cuda_or_with_a_device_of_their_own() {
    let refused = |args: &[&str], says: &[&str]| {
        let out = ringsam(args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(says.iter().all(|s| err.contains(s)), "{args:?} should say {says:?}: {err}");
    };
    refused(&["launch", "--gpus", "2", "--", "train", "--max_steps", "1"], &["--gpus 2", "--features cuda"]);
    refused(&["launch", "--gpus", "all", "--", "train", "--device", "cuda:1"], &["leave --device out"]);
    refused(&["launch", "--gpus", "two", "--", "train"], &["expected all or a number"]);
    refused(&["launch", "--gpus", "2", "--nproc", "3", "--", "train"], &["--nproc"]);
    // A worker opens its device before it joins the ring: the mistake shows at once.
    refused(&["worker", "--rank", "0", "--world_size", "1", "--peers", "127.0.0.1:9", "--device", "cuda"], &["--features cuda"]);
}

#[test]
fn a_precision_the_cpu_engine_does_not_have_is_refused() {
    let out = ringsam(&["bench", "step", "--precision", "tf32", "--iters", "1", "--batch", "2", "--image_size", "8"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--precision tf32: the CPU engine computes in fp32"));
    let out = ringsam(&["bench", "step", "--precision", "bf16", "--iters", "1"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--precision bf16: the CPU engine computes in fp32"));
    let out = ringsam(&["bench", "step", "--precision", "fp16", "--iters", "1"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("expected fp32, tf32 or bf16"));
}

/// cuDNN's convolutions take BF16 only as BF16 tensors: the pair is refused before any device
/// is opened (so here, without a GPU, too).
#[test]
fn bf16_with_cudnn_convolutions_is_refused_by_name() {
    for cmd in [&["bench", "step"][..], &["train"]] {
        let out = ringsam(&[cmd, &["--device", "cuda", "--precision", "bf16", "--conv_impl", "cudnn"]].concat());
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{cmd:?}: {err}");
        assert!(err.contains("--precision bf16 with --conv_impl cudnn: ") && err.contains("use --conv_impl gemm"), "{cmd:?}: {err}");
    }
}

#[test]
fn a_convolution_choice_is_for_a_gpu_and_must_be_known() {
    for args in [&["bench", "step", "--conv_impl", "cudnn"][..], &["train", "--conv_impl", "gemm"]] {
        let out = ringsam(args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains("the CPU engine's convolutions are its own"), "{args:?}: {err}");
    }
    let out = ringsam(&["bench", "step", "--device", "cuda", "--conv_impl", "winograd"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("unknown convolution implementation \"winograd\": expected gemm or cudnn"), "{err}");
}

#[test]
fn certs_print_a_kubernetes_secret_and_refuse_a_bad_name() {
    let yaml = stdout_ok(&ringsam(&["certs", "--nodes", "2", "--k8s-secret", "ringsam-certs", "--secret"]));
    assert!(yaml.starts_with("apiVersion: v1\nkind: Secret\nmetadata:\n  name: ringsam-certs\n"), "{yaml}");
    for key in ["ca.pem", "node-0.pem", "node-0.key", "node-1.pem", "node-1.key"] {
        assert!(yaml.contains(&format!("\n  {key}: |\n    -----BEGIN ")), "{key} missing: {yaml}");
    }
    assert!(yaml.contains("\n  cluster-secret: \"") && !yaml.contains("node-2."));
    let bad = ringsam(&["certs", "--k8s-secret", "Ringsam_Certs"]);
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("a Secret's name is lowercase"));
}

#[test]
fn local_replicas_may_share_one_gpu_named_by_ordinal() {
    // `--device cuda:0` puts every local replica on that GPU (how a one-GPU host checks local
    // replicas); here the device then fails to open (no CUDA in this build, or no GPU), after
    // the worker has said how the replicas are placed.
    let o = ringsam(&[
        "worker",
        "--rank",
        "0",
        "--world_size",
        "1",
        "--local_replicas",
        "2",
        "--peers",
        "127.0.0.1:1",
        "--device",
        "cuda:0",
        "--dataset",
        "digits",
        "--model_name",
        "WideResnet10x1",
        "--max_steps",
        "1",
    ]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("2 local replicas share cuda:0"), "{err}");
}

#[test]
fn bench_cipher_measures_every_library_and_suite() {
    let out = stdout_ok(&ringsam(&["bench", "cipher", "--packet", "1452", "--mib", "1", "--json"]));
    let rows: Vec<serde_json::Value> = out.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(rows.len(), 6, "{out}");
    for cipher in ["aes-128-gcm", "aes-256-gcm", "chacha20-poly1305"] {
        let of: Vec<_> = rows.iter().filter(|r| r["cipher"] == cipher).collect();
        let libs: Vec<_> = of.iter().map(|r| r["library"].as_str().unwrap()).collect();
        assert_eq!(libs, ["aws-lc-rs", "ring"], "{out}");
        let auto: Vec<_> = of.iter().filter(|r| r["auto"] == true).map(|r| r["library"].as_str().unwrap()).collect();
        assert_eq!(auto, [ringsam_collective::quic::CryptoLib::fastest_here().name()], "{out}");
        assert!(of.iter().all(|r| r["packet"] == 1452 && r["sealed"] == 1452 - 29), "{out}");
        assert!(of.iter().all(|r| r["seal_gb_s"].as_f64().unwrap() > 0.0 && r["open_gb_s"].as_f64().unwrap() > 0.0), "{out}");
    }
    let out = ringsam(&["bench", "cipher", "--packet", "65001"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--packet"));
}
