#!/usr/bin/env bash
# What a lent GPU host (16 cores, one NVIDIA GPU, root, no network) says about ringsam, in one
# call of the workplace's `device` tool: the CUDA probe, the CUDA kernels against the CPU engine
# (`ringsam selftest kernels`, rehearsed under emulation in CI), whole models and the SAM step on
# the GPU against the CPU engine (`ringsam selftest engine`, likewise), the engine's CPU step, the loader per core
# against Pillow with 1-8 workers, the loopback ring against Gloo with 4 ranks that each have
# cores of their own, and the ring across 4 namespace hosts at 1 Gbit/s. Each part has its own
# time limit and a failure moves on to the next part.
#
# The binary is built here (no toolkit needed: cudarc loads the driver at run time) and carried:
#   cargo build --release --features cuda,turbojpeg && strip -o .device/ringsam target/release/ringsam
#   device run: scripts/device_check.sh .device/ringsam      (carry .device)
# The log goes to $OUT/device.log (or /tmp/device-out). A second argument picks parts (a comma
# list of host, cuda, kernels, engine, resume, replicas, step, loader, ring, netns; default all); RING_THREADS and QUIC_STRIPES
# (default "1" each) are the ring's threads per rank and QUIC connections per neighbour compared
# in the ring part, e.g. RING_THREADS=1,2,4 QUIC_STRIPES=1,2; NETNS_RATES the namespace part's
# rates (default "1gbit 1gbit 4gbit 10gbit"); EXTRA_STEP_MODELS more name:batch:side:classes for
# the engine part's bench step (e.g. efficientnet-b3:64:300:1000); CONV_IMPL the convolutions
# its bench steps and training use (default cudnn; gemm if the cuDNN engine check failed).
set -u
bin=${1:-.device/ringsam}
parts=${2:-host,cuda,kernels,engine,resume,replicas,step,loader,ring,netns}
want() { [[ ",$parts," == *",$1,"* ]]; }
out=${OUT:-/tmp/device-out}
mkdir -p target/release "$out"
cp "$bin" target/release/ringsam && chmod +x target/release/ringsam
export PYTHONUNBUFFERED=1
part() { echo; echo "== $1 ($(date +%T))"; }

{
  part host
  nproc
  lscpu | grep -E "Model name|^CPU\(s\)|Thread\(s\)" || true
  nvidia-smi -L || true
  python3 -c "import torch, PIL, numpy; print('torch', torch.__version__, 'Pillow', PIL.__version__)" || true
  command -v ip tc taskset || true

  # The pip wheels' libraries (cuBLAS, cuDNN, NVRTC), in case they are not on the loader path.
  libs=$(python3 -c "import glob, os, site; print(':'.join(sorted({os.path.dirname(p) for d in site.getsitepackages() for p in glob.glob(d + '/nvidia/**/lib*.so*', recursive=True)})))" 2>/dev/null)
  lib_path="$libs${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
  if want cuda; then
    # The probe: the driver, cuBLAS and NVRTC found (with the wheels' folders on the loader
    # path), a tiny step run, and --sam_every's cycles on the device step (LookSAM is CPU-only).
    part "cuda: the probe (bench step --device cuda, WRN-16-2 batch 8, with sam_every:2,5)"
    LD_LIBRARY_PATH="$lib_path" timeout 60 target/release/ringsam bench step --device cuda --iters 1 \
      --batch_size 8 --image_size 32 --model_name WideResnet16x2 2>&1 | tail -6
  fi

  if want kernels; then
    # Compiled by NVRTC for this GPU, then each against the CPU engine: element-wise bitwise,
    # norms to 1e-12; timings at WRN-28-10's parameter count (GB/s against the GPU's memory).
    part "CUDA kernels vs the CPU engine (ringsam selftest kernels, 36.5 M elements)"
    LD_LIBRARY_PATH="$lib_path" timeout 90 \
      target/release/ringsam selftest kernels --device cuda --elements 36500000 2>&1 | tail -40
  fi

  if want engine; then
    # 1. Whole models on the GPU (the caching allocator, the layers' device paths, GEMMs through
    # cuBLAS with TF32 off) and the SAM step, each against the CPU engine within 1e-4, and one
    # pass with BF16 products against BF16's rounding of the CPU's; rehearsed
    # under emulation in CI at the quick size (crates/bench/tests/engine_check.rs).
    # Convolutions by cuDNN (--conv_impl cudnn, not the default until this passes); if that
    # fails, the same check by im2col and cuBLAS (the default) so the rest is still checked.
    part "engine 1: the engine on CUDA vs the CPU engine (ringsam selftest engine --size full --conv_impl cudnn)"
    LD_LIBRARY_PATH="$lib_path" timeout 150 \
      target/release/ringsam selftest engine --device cuda --size full --conv_impl cudnn 2>&1 | tail -24
    if [ "${PIPESTATUS[0]}" != 0 ]; then
      part "engine 1b: the same with --conv_impl gemm"
      LD_LIBRARY_PATH="$lib_path" timeout 150 \
        target/release/ringsam selftest engine --device cuda --size full --conv_impl gemm 2>&1 | tail -24
    fi
    # 2. The step timed, SGD and SAM, TF32, beside PyTorch eager (cuDNN benchmark mode,
    # channels_last, TF32, the same two models and the same SAM step). nvidia-smi samples the
    # GPU's utilisation once a second meanwhile (dmon.log).
    part "engine 2: bench step --device cuda (WRN-28-10 batch 128 at 32, ResNet-50 batch 256 at 224)"
    (nvidia-smi dmon -s um -d 1 > "$out/dmon.log" 2>&1 &)
    # cuDNN's convolutions by layout: the engine's strided (C, N, H, W) against NCHW and NHWC,
    # the measurement the device layout waits on.
    part "engine 2: cuDNN by layout (ringsam bench conv)"
    LD_LIBRARY_PATH="$lib_path" timeout 120 target/release/ringsam bench conv --device cuda 2>&1 | tail -20
    # By cuDNN (CONV_IMPL, default cudnn); EfficientNet-B0 times the depthwise kernels; WRN-28-10
    # again by im2col (--conv_impl gemm) is the convolution's before/after in the same call.
    for spec in WideResnet28x10:128:32:10 Resnet50:256:224:1000 efficientnet-b0:128:224:1000 ${EXTRA_STEP_MODELS:-}; do
      IFS=: read -r model batch side classes <<< "$spec"
      LD_LIBRARY_PATH="$lib_path" timeout "${STEP_TIMEOUT:-90}" target/release/ringsam bench step \
        --device cuda --iters 3 --model_name "$model" --batch_size "$batch" --image_size "$side" \
        --num_classes "$classes" --cheaper none --conv_impl "${CONV_IMPL:-cudnn}" --profile 2>&1 | tail -64
    done
    LD_LIBRARY_PATH="$lib_path" timeout "${STEP_TIMEOUT:-90}" target/release/ringsam bench step \
      --device cuda --iters 3 --model_name WideResnet28x10 --batch_size 128 --image_size 32 \
      --num_classes 10 --cheaper none --conv_impl gemm 2>&1 | tail -6
    # BF16 products (--precision bf16: im2col convolutions, cuDNN refuses FP32 tensors in BF16).
    LD_LIBRARY_PATH="$lib_path" timeout "${STEP_TIMEOUT:-90}" target/release/ringsam bench step \
      --device cuda --iters 3 --model_name Resnet50 --batch_size 256 --image_size 224 \
      --num_classes 1000 --cheaper none --conv_impl gemm --precision bf16 2>&1 | tail -6
    part "engine 2: PyTorch baseline (benches/torch_step_baseline.py, the same two models)"
    timeout 150 python3 benches/torch_step_baseline.py --models WideResnet28x10:128:32,Resnet50:256:224 \
      --iters 3 2>&1 | tail -3
    pkill -f "nvidia-smi dmon" || true
    # 3. Training on the GPU through the trainer: 200 steps on synthetic data (loss going down
    # is in the log lines), the GPU's utilisation sampled meanwhile (dmon_train.log).
    part "engine 3: 200 steps of train --device cuda (WRN-16-4, synthetic 32x32, batch 128, SAM)"
    (nvidia-smi dmon -s u -d 1 > "$out/dmon_train.log" 2>&1 &)
    LD_LIBRARY_PATH="$lib_path" timeout "${TRAIN_TIMEOUT:-150}" target/release/ringsam train --device cuda \
      --dataset synthetic --model_name WideResnet16x4 --batch_size 128 --num_epochs 100 --max_steps 200 \
      --sam_rho 0.05 --log_every_steps 20 --conv_impl "${CONV_IMPL:-cudnn}" --output_dir /tmp/gpu-train 2>&1 | tail -30
    pkill -f "nvidia-smi dmon" || true
    awk '$1 == 0 && $2 > 0 { s += $2; n++ } END { if (n) printf "GPU busy (sm %%) over %d busy seconds: mean %.0f\n", n, s / n }' \
      "$out/dmon_train.log"
  fi

  if want resume; then
    # The trainer's state through a GPU and back: 40 steps, a resume to 64 (the checkpoint goes
    # up to the device), then that checkpoint evaluated on the GPU and on the CPU.
    part "resume: train --device cuda to 40 steps, resume to 64, eval on cuda and cpu"
    run=(--dataset synthetic --model_name WideResnet16x4 --batch_size 128 --num_epochs 100 --sam_rho 0.05 \
      --log_every_steps 16 --output_dir /tmp/gpu-resume)
    LD_LIBRARY_PATH="$lib_path" timeout 60 target/release/ringsam train --device cuda "${run[@]}" --max_steps 40 2>&1 | tail -2
    LD_LIBRARY_PATH="$lib_path" timeout 60 target/release/ringsam train --device cuda "${run[@]}" --max_steps 64 2>&1 \
      | grep -E "resum|epoch 3:|final" | tail -4
    ckpt=$(ls -d /tmp/gpu-resume/*/*/*/*/checkpoints/checkpoint_64)
    for device in cuda cpu; do
      LD_LIBRARY_PATH="$lib_path" timeout 120 target/release/ringsam eval --checkpoint "$ckpt" --device "$device" 2>&1 | tail -1
    done
  fi

  if want replicas; then
    # Data-parallel on GPUs (issue 23), two replicas sharing the one GPU: 2 x batch 64 must equal
    # 1 x batch 128 with --grad_accum_steps 2 (the same batch-norm batches), FP32, im2col
    # convolutions (deterministic), within 1e-4 relative after 20 steps; images/s of each and
    # the exchange's exposed time per step (rank 0's "per step" line). At learning rate 0.001:
    # from initialisation at 0.1 the CPU engine itself carries a rounding difference of 3e-8
    # after one step to 3e-2 after 20 (WRN-10-1, this comparison on the CPU); at 0.001, 3e-5.
    # Two ways to run the 2 replicas: two processes over loopback QUIC (`launch`), and one worker
    # whose local replicas meet over in-process pipes (`worker --local_replicas 2`, both on cuda:0).
    part "replicas: 2 on one GPU (batch 64 each) vs 1 with --grad_accum_steps 2 (WRN-16-4, 20 steps, fp32)"
    run=(--dataset synthetic --model_name WideResnet16x4 --batch_size 128 --num_epochs 100 --max_steps 20 \
      --learning_rate 0.001 --sam_rho 0.05 --log_every_steps 10 --precision fp32 --conv_impl gemm)
    rm -rf /tmp/gpu-rep1 /tmp/gpu-rep2 /tmp/gpu-rep3  # a rerun on a warm machine must not resume the last one
    LD_LIBRARY_PATH="$lib_path" timeout 120 target/release/ringsam train --device cuda --grad_accum_steps 2 \
      "${run[@]}" --output_dir /tmp/gpu-rep1 2>&1 | grep -E "images/s|steps:" | tail -3
    LD_LIBRARY_PATH="$lib_path" timeout 180 target/release/ringsam launch --nproc 2 -- train --device cuda:0 \
      "${run[@]}" --output_dir /tmp/gpu-rep2 2>&1 | grep -E "images/s|per step|steps:" | tail -5
    RINGSAM_CLUSTER_SECRET=device-check-pipes-secret LD_LIBRARY_PATH="$lib_path" timeout 180 target/release/ringsam \
      worker --rank 0 --world_size 1 --local_replicas 2 --peers 127.0.0.1:29650 --transport tcp --device cuda:0 \
      "${run[@]}" --output_dir /tmp/gpu-rep3 2>&1 | grep -E "images/s|per step|steps:|pipes" | tail -6
    python3 - /tmp/gpu-rep1 /tmp/gpu-rep2 /tmp/gpu-rep3 <<'PY'
import array, glob, json, struct, sys
def tensors(run):
    found = glob.glob(run + "/*/*/*/*/checkpoints/checkpoint_20/model.safetensors")
    if not found:
        sys.exit(f"FAIL: no checkpoint_20 under {run} (the run above failed)")
    path = found[0]
    raw = open(path, "rb").read()
    n = struct.unpack("<Q", raw[:8])[0]
    head = json.loads(raw[8:8 + n])
    return {k: array.array("f", raw[8 + n + v["data_offsets"][0]:8 + n + v["data_offsets"][1]])
            for k, v in head.items() if k != "__metadata__"}
a = tensors(sys.argv[1])
for how, run in (("2 processes (launch, QUIC)", sys.argv[2]), ("2 local replicas (pipes)", sys.argv[3])):
    b = tensors(run)
    worst = max(abs(x - y) / max(abs(x), 1.0) for k in a for x, y in zip(a[k], b[k]))
    print(f"{how} x 64 vs 1 x 128 (2 micro-batches): max relative difference {worst:.3e} over {len(a)} tensors "
          f"({'PASS' if worst <= 1e-4 else 'FAIL'}: bound 1e-4)")
PY
  fi

  if want step; then
    part "engine step on the CPU (WRN-16-4, batch 64, all cores)"
    timeout 120 target/release/ringsam bench step --device cpu --iters 3 --cheaper none 2>&1 | tail -6
  fi

  if want loader; then
    part "loader per core vs Pillow (1200 JPEGs 500x375 q90, 224 px)"
    timeout 240 python3 benches/loader_vs_pillow.py --images 1200 --workers 1,2,4,8 2>&1 | tail -16
  fi

  if want ring; then
    part "loopback ring vs Gloo (4 processes, 64 MiB, ring threads ${RING_THREADS:-1}, QUIC stripes ${QUIC_STRIPES:-1})"
    # The GPU host has PyTorch (its Gloo) but no libgloo-dev and no package mirror: --gloo torch.
    # QUIC's direct driver (the default) against quinn's; stripes are quinn's alone.
    variants=(--variant "quic-quinn:quic:--quic_driver quinn")
    [ "${QUIC_STRIPES:-1}" != 1 ] && variants+=(--variant "quic-${QUIC_STRIPES}s:quic:--quic_driver quinn --quic_stripes ${QUIC_STRIPES}")
    timeout 400 python3 benches/allreduce_vs_gloo.py --nproc 4 --size 64M --rounds 3 --gloo torch \
      --ring-threads "${RING_THREADS:-1}" "${variants[@]}" 2>&1 | tail -17
  fi

  if want netns; then
    # The GPU image has no iproute2: carry this machine's (Debian bookworm's need glibc 2.34):
    #   mkdir -p .device/netbin .device/netlib && cp /usr/sbin/{ip,tc,ethtool} .device/netbin/
    #   ldd /usr/sbin/{ip,tc,ethtool} | awk '/=>/{print $3}' | sort -u | grep -v -E 'libc.so|libm.so' \
    #     | xargs -I{} cp -L {} .device/netlib/
    if [ -d .device/netbin ]; then
      export PATH=$PWD/.device/netbin:$PATH LD_LIBRARY_PATH=$PWD/.device/netlib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
    fi
    for rate in ${NETNS_RATES:-1gbit 1gbit 4gbit 10gbit}; do
      part "ring across 4 namespace hosts at $rate (64 MiB)"
      timeout 100 scripts/netns_ring.sh run --hosts 4 --rate "$rate" -- \
        scripts/netns_allreduce.sh --transports tcp,quic --sizes 64M --iters 5 2>&1 | tail -3
    done
  fi
  part done
} 2>&1 | tee "$out/device.log"
