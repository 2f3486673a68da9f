//! Finetuning from a published Flax EfficientNet (the fixture built to the published layout by
//! tests/fixtures/make_efficientnet_fixture.py) and starting any run from earlier weights, through
//! the binary: `convert`, `train --from_pretrained_checkpoint`, `train --init_from`, `eval`.

use std::path::{Path, PathBuf};

use crate::util::{f32_tensors, ringsam, stdout_ok};

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/efficientnet_test/checkpoint.tar.gz")
}

fn tensors(path: &Path) -> Vec<(String, Vec<f32>)> {
    f32_tensors(&std::fs::read(path).unwrap())
}

fn run_dir(out: &Path, rho: &str) -> PathBuf {
    out.join(format!("lr_0.1/wd_0.001/rho_{rho}/seed_0"))
}

/// Trains efficientnet-test on 32-px synthetic data (10 classes) for `steps` steps into `out`.
fn train_efficientnet_test(out: &Path, steps: &str, extra: &[&str]) -> std::process::Output {
    let mut args = vec![
        "train",
        "--dataset",
        "synthetic",
        "--image_size",
        "32",
        "--model_name",
        "efficientnet-test",
        "--batch_size",
        "16",
        "--max_steps",
        steps,
        "--output_dir",
        out.to_str().unwrap(),
        "--threads",
        "1",
    ];
    args.extend(extra);
    ringsam(&args)
}

/// [`train_efficientnet_test`] for 3 SAM steps from the fixture, as the reference finetunes.
fn finetune(out: &Path, extra: &[&str]) -> std::process::Output {
    let ckpt = fixture();
    let mut args =
        vec!["--sam_rho", "0.1", "--from_pretrained_checkpoint", "true", "--efficientnet_checkpoint_path", ckpt.to_str().unwrap()];
    args.extend(extra);
    train_efficientnet_test(out, "3", &args)
}

#[test]
fn convert_finds_the_model_and_writes_what_init_from_reads() {
    let tmp = tempfile::tempdir().unwrap();
    let to = tmp.path().join("b.safetensors");
    let out = stdout_ok(&ringsam(&["convert", "--from", fixture().to_str().unwrap(), "--to", to.to_str().unwrap()]));
    assert!(out.contains("model efficientnet-test: 1000 classes, 3 input channels"), "{out}");
    assert!(out.contains("1 bfloat16, 1 float16, 195 float32"), "{out}");
    let written = tensors(&to);
    assert_eq!(written.len(), 197);
    // The stem kernel was stored as float16: its values are exact halves.
    let stem = &written.iter().find(|(n, _)| n == "Stem_0/conv2d/kernel").unwrap().1;
    assert!(stem.iter().all(|v| half::f16::from_f32(*v).to_f32() == *v));
    // A model it does not fit: every difference named, exit code 2 (the user's input).
    let bad = ringsam(&["convert", "--from", to.to_str().unwrap(), "--to", "x.safetensors", "--model_name", "efficientnet-b0"]);
    let err = String::from_utf8_lossy(&bad.stderr);
    assert_eq!(bad.status.code(), Some(2), "{err}");
    assert!(
        err.contains("121 missing: MBConvBlock_11/") && err.contains("Stem_0/conv2d/kernel is [3, 3, 3, 8] in the checkpoint"),
        "{err}"
    );
}

#[test]
fn finetuning_keeps_the_checkpoint_statistics_and_gives_a_new_head() {
    let tmp = tempfile::tempdir().unwrap();
    let converted = tmp.path().join("b.safetensors");
    stdout_ok(&ringsam(&["convert", "--from", fixture().to_str().unwrap(), "--to", converted.to_str().unwrap()]));
    let source = tensors(&converted);
    let frozen = finetune(&tmp.path().join("frozen"), &[]);
    let log = String::from_utf8_lossy(&frozen.stderr);
    assert!(frozen.status.success(), "{log}");
    assert!(log.contains("Head_11/dense/kernel: checkpoint [128, 1000], model [128, 10]: kept at its fresh initialisation"), "{log}");
    assert!(log.contains("batch norm frozen"), "{log}");
    let after = tensors(&run_dir(&tmp.path().join("frozen"), "0.1").join("checkpoints/checkpoint_3/model.safetensors"));
    let stats = |t: &[(String, Vec<f32>)]| -> Vec<(String, Vec<f32>)> {
        t.iter().filter(|(n, _)| n.ends_with("/mean") || n.ends_with("/var")).filter(|(n, _)| !n.starts_with("ema/")).cloned().collect()
    };
    assert_eq!(stats(&after).len(), 62);
    assert_eq!(stats(&after), stats(&source), "frozen batch norm must leave the running statistics as loaded");
    let kernel = |t: &[(String, Vec<f32>)], name: &str| t.iter().find(|(n, _)| n == name).unwrap().1.clone();
    let name = "MBConvBlock_5/project_conv2d_1/kernel";
    assert_ne!(kernel(&after, name), kernel(&source, name), "the weights train");
    // With batch norm unfrozen, the statistics move.
    let moving = finetune(&tmp.path().join("moving"), &["--freeze_batch_norm", "false"]);
    assert!(moving.status.success(), "{}", String::from_utf8_lossy(&moving.stderr));
    let after = tensors(&run_dir(&tmp.path().join("moving"), "0.1").join("checkpoints/checkpoint_3/model.safetensors"));
    assert_ne!(stats(&after), stats(&source));
}

#[test]
fn init_from_a_checkpoint_evaluates_as_the_checkpoint_did() {
    let tmp = tempfile::tempdir().unwrap();
    let out = |name: &str| tmp.path().join(name).to_str().unwrap().to_string();
    let base =
        ["train", "--dataset", "digits", "--model_name", "WideResnet10x1", "--batch_size", "64", "--image_level_augmentations", "none"];
    let (out_a, out_b) = (out("a"), out("b"));
    let first = [&base[..], &["--num_epochs", "1", "--output_dir", &out_a]].concat();
    stdout_ok(&ringsam(&first));
    let trained = run_dir(&tmp.path().join("a"), "0.0");
    let started = [&base[..], &["--max_steps", "0", "--output_dir", &out_b, "--init_from", trained.to_str().unwrap()]].concat();
    let second = ringsam(&started);
    assert!(String::from_utf8_lossy(&second.stderr).contains("initialised 37 tensors from ringsam checkpoint"));
    let eval = |dir: PathBuf| stdout_ok(&ringsam(&["eval", "--checkpoint", dir.to_str().unwrap()]));
    let a = eval(trained.join("checkpoints/checkpoint_22"));
    let b = eval(run_dir(&tmp.path().join("b"), "0.0").join("checkpoints/checkpoint_0"));
    assert!(a.contains("accuracy"), "{a}");
    assert_eq!(a, b, "the same weights evaluate the same");
}

#[test]
fn the_finetuning_flags_go_together() {
    let missing = ringsam(&["train", "--dataset", "digits", "--from_pretrained_checkpoint", "true"]);
    assert_eq!(missing.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("needs --efficientnet_checkpoint_path"));
    let alone = ringsam(&["train", "--dataset", "digits", "--efficientnet_checkpoint_path", "x.tar.gz"]);
    assert_eq!(alone.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&alone.stderr).contains("only with --from_pretrained_checkpoint"));
    let wrong = ringsam(&["train", "--dataset", "digits", "--model_name", "WideResnet10x1", "--init_from", fixture().to_str().unwrap()]);
    let err = String::from_utf8_lossy(&wrong.stderr);
    assert_eq!(wrong.status.code(), Some(2), "{err}");
    assert!(err.contains("does not fit this model") && err.contains("unexpected: Head_11"), "{err}");
}

#[test]
fn a_source_without_statistics_loads_but_cannot_be_frozen() {
    use safetensors::{Dtype, tensor::TensorView};
    let tmp = tempfile::tempdir().unwrap();
    let converted = tmp.path().join("b.safetensors");
    stdout_ok(&ringsam(&["convert", "--from", fixture().to_str().unwrap(), "--to", converted.to_str().unwrap()]));
    let params: Vec<(String, Vec<u8>, Vec<usize>)> = {
        let bytes = std::fs::read(&converted).unwrap();
        let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
        st.tensors()
            .into_iter()
            .filter(|(n, _)| !n.ends_with("/mean") && !n.ends_with("/var"))
            .map(|(n, t)| (n, t.data().to_vec(), t.shape().to_vec()))
            .collect()
    };
    let views: Vec<(String, TensorView)> =
        params.iter().map(|(n, b, shape)| (n.clone(), TensorView::new(Dtype::F32, shape.clone(), b).unwrap())).collect();
    let only_params = tmp.path().join("params.safetensors");
    std::fs::write(&only_params, safetensors::serialize(views, None).unwrap()).unwrap();
    let run = |extra: &[&str], out: &str| {
        let mut args = vec!["--init_from", only_params.to_str().unwrap()];
        args.extend(extra);
        train_efficientnet_test(&tmp.path().join(out), "1", &args)
    };
    let frozen = run(&["--freeze_batch_norm"], "frozen");
    let err = String::from_utf8_lossy(&frozen.stderr);
    assert_eq!(frozen.status.code(), Some(2), "{err}");
    assert!(err.contains("has no batch-norm statistics"), "{err}");
    let free = run(&[], "free");
    let log = String::from_utf8_lossy(&free.stderr);
    assert!(free.status.success(), "{log}");
    assert!(log.contains("the source has no batch-norm statistics: the model's initial ones are kept"), "{log}");
}
