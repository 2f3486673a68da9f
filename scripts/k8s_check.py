"""Checks k8s/ the way a cluster and ringsam would read it, offline (scripts/k8s_check.sh runs it).

1. Every kustomization (base, jobset, overlays/*, extras/*) renders, with each kustomize given
   (kubectl's built-in; also Debian's kubectl 1.20 with kustomize v2.0.3 when found), and the
   renderings agree with each other.
2. Core objects validate strictly against Kubernetes 1.33's schemas (kubernetes-validate); the
   JobSet against the vendored CRD's openAPIV3Schema (jsonschema), unknown fields refused.
3. Each worker pod template agrees with what `ringsam worker` reads: its flags and RINGSAM_*
   variables are ones the binary declares (read from `ringsam worker --help`, not restated here),
   the peer pattern names the pods' DNS names, every port a worker listens on is exposed, paths
   lie on mounts, the Secret's keys are those `ringsam certs --k8s-secret` writes, and the
   binary accepts the pod's exact command and environment (it gets as far as looking for peers).

    python3 scripts/k8s_check.py BINARY KUBECTL [KUBECTL ...]
"""

import copy
import os
import re
import subprocess
import sys
import tempfile

import jsonschema
import kubernetes_validate
import yaml

K8S = "k8s"
KUBERNETES_VERSION = "1.33"
# Overlays whose run.toml is a recipe from configs/, unchanged.
RECIPES = {
    "cifar10-wrn28x10": "configs/cifar10-wrn28x10-sam.toml",
    "imagenet-resnet50": "configs/imagenet-resnet50-sam.toml",
    "efficientnet-finetune": "configs/imagenet-efficientnet-l2-475-finetune-sam.toml",
}
COMMON_RECIPE = "configs/quickstart.toml"
INDEX_ANNOTATION = "metadata.annotations['batch.kubernetes.io/job-completion-index']"

failures = []


def fail(where, what):
    failures.append(f"{where}: {what}")


def kustomizations():
    dirs = ["base", "jobset"]
    for group in ("overlays", "extras"):
        dirs += [f"{group}/{d}" for d in sorted(os.listdir(os.path.join(K8S, group)))]
    return dirs


def render(kubectl, d):
    out = subprocess.run([kubectl, "kustomize", os.path.join(K8S, d)], capture_output=True, text=True)
    if out.returncode != 0:
        fail(d, f"{kubectl} kustomize failed: {out.stderr.strip()}")
        return None
    return [doc for doc in yaml.safe_load_all(out.stdout) if doc]


def normalized(docs):
    """What a cluster would store: env order kept only where it matters (checked apart), empty
    metadata maps dropped (kustomize v2 writes them)."""
    docs = copy.deepcopy(docs)
    for doc in docs:
        meta = doc.get("metadata", {})
        for k in ("labels", "annotations"):
            if meta.get(k) == {}:
                del meta[k]
        for c in containers(doc):
            if "env" in c:
                c["env"] = sorted(c["env"], key=lambda e: e["name"])
        for _, t in pod_templates(doc):
            if "volumes" in t["spec"]:
                t["spec"]["volumes"] = sorted(t["spec"]["volumes"], key=lambda v: v["name"])
    return sorted(docs, key=lambda d: (d["kind"], d["metadata"]["name"]))


def pod_templates(doc):
    """(job spec, pod template) pairs of a Job, a JobSet or a Deployment."""
    if doc["kind"] == "Job":
        return [(doc["spec"], doc["spec"]["template"])]
    if doc["kind"] == "JobSet":
        return [(rj["template"]["spec"], rj["template"]["spec"]["template"]) for rj in doc["spec"]["replicatedJobs"]]
    if doc["kind"] == "Deployment":
        return [(doc["spec"], doc["spec"]["template"])]
    return []


def containers(doc):
    out = []
    for _, t in pod_templates(doc):
        out += t["spec"].get("initContainers", []) + t["spec"]["containers"]
    return out


def strict_crd_schema(schema):
    """The CRD schema with unknown fields refused, as the API server prunes them (an operator
    would lose a misspelt field silently)."""
    schema = copy.deepcopy(schema)

    def walk(s):
        if isinstance(s, dict):
            if s.get("type") == "object" and "properties" in s and not s.get("x-kubernetes-preserve-unknown-fields"):
                s.setdefault("additionalProperties", False)
            for v in s.values():
                walk(v)
        elif isinstance(s, list):
            for v in s:
                walk(v)

    walk(schema)
    return schema


def jobset_schema():
    with open(os.path.join(K8S, "schemas", "jobset.x-k8s.io_jobsets.yaml")) as f:
        crd = next(d for d in yaml.safe_load_all(f) if d)
    version = next(v for v in crd["spec"]["versions"] if v["name"] == "v1alpha2")
    return strict_crd_schema(version["schema"]["openAPIV3Schema"])


def validate(d, docs, js_schema):
    for doc in docs:
        what = f"{d}: {doc['kind']}/{doc['metadata']['name']}"
        if doc["apiVersion"].startswith("jobset.x-k8s.io/"):
            for e in jsonschema.Draft7Validator(js_schema).iter_errors(doc):
                fail(what, f"JobSet schema: {'/'.join(map(str, e.path))}: {e.message}")
            continue
        try:
            kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
        except kubernetes_validate.utils.ValidationError as e:
            fail(what, f"Kubernetes {KUBERNETES_VERSION} schema: {'/'.join(map(str, e.path))}: {e.message}")


def worker_interface(binary):
    """Flags and environment variables `ringsam worker` declares, from its own help."""
    text = subprocess.run([binary, "worker", "--help"], capture_output=True, text=True, check=True).stdout
    flags = set(re.findall(r"^\s*(?:-\w, )?(--[a-z0-9_]+)", text, re.M))
    # Declared as a flag's `[env: …]`, or named in the help as read (RINGSAM_CLUSTER_SECRET).
    envs = set(re.findall(r"\b(RINGSAM_[A-Z0-9_]+)\b", text))
    if "--world_size" not in flags or "RINGSAM_PEER_PATTERN" not in envs:
        raise SystemExit(f"k8s_check: cannot read the worker's flags from `{binary} worker --help`")
    return flags, envs


def check_other_commands(d, doc, binary):
    """Containers of the ringsam image that run another subcommand (`data pack`): their flags
    must be the subcommand's, as its help lists them."""
    for c in containers(doc):
        args = c.get("args", [])
        if not c["image"].startswith("ringsam:") or "command" in c or not args or args[0] == "worker":
            continue
        words = [a for a in args[: next((i for i, a in enumerate(args) if a.startswith("--")), len(args))]]
        out = subprocess.run([binary, *words, "--help"], capture_output=True, text=True)
        if out.returncode != 0:
            fail(d, f"container {c['name']}: `ringsam {' '.join(words)}` is not a command: {out.stderr.strip()}")
            continue
        flags = set(re.findall(r"^\s*(?:-\w, )?(--[a-z0-9_]+)", out.stdout, re.M))
        for a in args:
            if a.startswith("--") and a.split("=")[0] not in flags:
                fail(d, f"container {c['name']}: `ringsam {' '.join(words)}` has no flag {a}")


def certs_secret_keys(binary, name, nodes):
    out = subprocess.run([binary, "certs", "--nodes", str(nodes), "--k8s-secret", name, "--secret"],
                         capture_output=True, text=True, check=True).stdout
    secret = yaml.safe_load(out)
    return set(secret.get("stringData", {})) | set(secret.get("data", {}))


def env_values(c, index):
    """The container's environment as Kubernetes resolves it for pod `index` (values from the
    downward API and Secrets stand in as placeholders), checking that `$(VAR)` references point
    at variables defined earlier, as Kubernetes requires."""
    env, where = {}, c["name"]
    for e in c.get("env", []):
        if "value" in e:
            value = e["value"]
            for ref in re.findall(r"\$\(([A-Za-z0-9_]+)\)", value):
                if ref not in env:
                    fail(where, f"env {e['name']} refers to $({ref}), not defined before it")
                    continue
                value = value.replace(f"$({ref})", env[ref])
            env[e["name"]] = value
        elif e.get("valueFrom", {}).get("fieldRef", {}).get("fieldPath") == INDEX_ANNOTATION:
            env[e["name"]] = str(index)
        elif "secretKeyRef" in e.get("valueFrom", {}):
            env[e["name"]] = ("secret", e["valueFrom"]["secretKeyRef"]["name"], e["valueFrom"]["secretKeyRef"]["key"])
        elif "resourceFieldRef" in e.get("valueFrom", {}):
            env[e["name"]] = "2"
        else:
            fail(where, f"env {e['name']}: a source this check does not know")
    return env


def flag_values(args):
    out, i = {}, 1
    while i < len(args):
        a = args[i]
        if a.startswith("--"):
            if "=" in a:
                k, v = a.split("=", 1)
                out[k] = v
            elif i + 1 < len(args) and not args[i + 1].startswith("--"):
                out[a] = args[i + 1]
                i += 1
            else:
                out[a] = None
        i += 1
    return out


def mount_for(path, mounts):
    best = None
    for m in mounts:
        mp = m["mountPath"].rstrip("/")
        if (path == mp or path.startswith(mp + "/")) and (best is None or len(mp) > len(best["mountPath"])):
            best = m
    return best


def check_worker(where, docs, spec, tmpl, hostnames, subdomain, interface, binary):
    flags, envs = interface
    pod = tmpl["spec"]
    c = next((c for c in pod["containers"] if c.get("args", [None])[0] == "worker"), None)
    if c is None:
        fail(where, "no container runs `ringsam worker`")
        return
    where = f"{where} container {c['name']}"
    args = c["args"]
    for a in args:
        if a.startswith("--") and a.split("=")[0] not in flags:
            fail(where, f"argument {a}: `ringsam worker` has no such flag")
    env = env_values(c, 0)
    for name in env:
        if name.startswith("RINGSAM_") and name not in envs:
            fail(where, f"env {name}: `ringsam worker` reads no such variable")
    if env.get("JOB_COMPLETION_INDEX") != "0":
        fail(where, "JOB_COMPLETION_INDEX is not taken from the pod's completion-index annotation")
    world = int(env.get("RINGSAM_WORLD_SIZE", "0"))
    if not (world == spec.get("completions") == spec.get("parallelism")):
        fail(where, f"RINGSAM_WORLD_SIZE {world}, completions {spec.get('completions')}, parallelism {spec.get('parallelism')}: all must agree")
    # A pod with --local_replicas N runs N replicas, each an elastic slot of its own.
    local = int(flag_values(args).get("--local_replicas", env.get("RINGSAM_LOCAL_REPLICAS", 1)))
    gpus = int(c.get("resources", {}).get("limits", {}).get("nvidia.com/gpu", 0))
    if gpus and (local != gpus or flag_values(args).get("--device") != "cuda"):
        fail(where, f"{gpus} GPUs per pod: give --local_replicas {gpus} --device cuda (one replica per GPU), not {local}")
    slots = world * local
    min_replicas = int(env.get("RINGSAM_MIN_REPLICAS", slots))
    if not slots // 2 < min_replicas <= slots:
        fail(where, f"RINGSAM_MIN_REPLICAS {min_replicas} of {slots} slots: a majority is needed to make progress")
    max_replicas = flag_values(args).get("--max_replicas")
    if max_replicas is not None and int(max_replicas) > slots:
        fail(where, f"--max_replicas {max_replicas}: the job has only {slots} slots ({world} pods x {local} replicas)")
    if flag_values(args).get("--device", "cpu").startswith("cuda") and not gpus:
        fail(where, "--device cuda on a pod that requests no nvidia.com/gpu")
    if spec.get("completionMode") != "Indexed" or pod.get("restartPolicy") != "Never":
        fail(where, "needs completionMode Indexed and restartPolicy Never")
    rules = spec.get("podFailurePolicy", {}).get("rules", [])
    if not any(r["action"] == "FailJob" and 2 in r.get("onExitCodes", {}).get("values", []) for r in rules):
        fail(where, "podFailurePolicy does not fail the job on exit code 2 (a configuration error)")
    if not any(r["action"] == "Ignore" and any(p["type"] == "DisruptionTarget" for p in r.get("onPodConditions", [])) for r in rules):
        fail(where, "podFailurePolicy does not ignore DisruptionTarget")
    if pod.get("terminationGracePeriodSeconds", 30) < 60:
        fail(where, "terminationGracePeriodSeconds under 60: the SIGTERM checkpoint may be cut short")
    if pod.get("enableServiceLinks", True):
        fail(where, "enableServiceLinks: the Service `ringsam` would inject RINGSAM_* variables")

    # Peers: the pattern must spell the pods' DNS names and the port they listen on.
    pattern = env.get("RINGSAM_PEER_PATTERN", "")
    m = re.fullmatch(r"(.+)\.([a-z0-9-]+):(\d+)", pattern)
    if not m:
        fail(where, f"RINGSAM_PEER_PATTERN {pattern!r} is not HOST.SUBDOMAIN:PORT")
        return
    host, sub, port = m.group(1), m.group(2), int(m.group(3))
    if host != hostnames or sub != subdomain:
        fail(where, f"RINGSAM_PEER_PATTERN {pattern!r}: the pods are {hostnames}.{subdomain}")
    metrics_port = int(env.get("RINGSAM_METRICS_ADDR", ":0").rsplit(":", 1)[1])
    quic = env.get("RINGSAM_TRANSPORT", "quic") == "quic"
    # Replica i's ring address is port + 2i: the pod's first replica in a generation listens
    # there (the others meet over in-process pipes). Each elastic slot has its membership port,
    # replica i's at port + 2i + 1.
    listens = {(metrics_port, "TCP")}
    listens.update((port + 2 * i, "UDP" if quic else "TCP") for i in range(local))
    if "RINGSAM_MIN_REPLICAS" in env:
        listens.update((port + 2 * i + 1, "UDP") for i in range(local))
    exposed = {(p["containerPort"], p.get("protocol", "TCP")) for p in c.get("ports", [])}
    for p in sorted(listens - exposed):
        fail(where, f"the worker listens on {p[0]}/{p[1]}, which the container does not declare")
    services = [d for d in docs if d["kind"] == "Service" and d["metadata"]["name"] == subdomain]
    for svc in services:
        s = svc["spec"]
        if s.get("clusterIP") != "None" or not s.get("publishNotReadyAddresses"):
            fail(where, f"Service {subdomain} must be headless with publishNotReadyAddresses")
        labels = tmpl["metadata"].get("labels", {})
        if any(labels.get(k) != v for k, v in s.get("selector", {}).items()):
            fail(where, f"Service {subdomain} does not select the worker pods")
        on_service = {(p["port"], p.get("protocol", "TCP")) for p in s.get("ports", [])}
        for p in sorted(listens - on_service):
            fail(where, f"Service {subdomain} does not expose {p[0]}/{p[1]}")
    if not services and not hostnames.endswith("-0-{i}"):
        fail(where, f"no headless Service {subdomain}")
    for probe, path in (("readinessProbe", "/readyz"), ("livenessProbe", "/healthz")):
        get = c.get(probe, {}).get("httpGet", {})
        named = {p.get("name"): p["containerPort"] for p in c.get("ports", [])}
        if get.get("path") != path or named.get(get.get("port"), get.get("port")) != metrics_port:
            fail(where, f"{probe} must GET {path} on the metrics port {metrics_port}")

    # Paths: each on a mount of the right kind.
    mounts = c.get("volumeMounts", [])
    volumes = {v["name"]: v for v in pod.get("volumes", [])}
    fv = flag_values(args)
    paths = {k: v for k, v in fv.items() if isinstance(v, str) and v.startswith("/")}
    paths.update({k: v for k, v in env.items() if isinstance(v, str) and v.startswith("/")})
    for what, path in paths.items():
        mount = mount_for(path, mounts)
        if mount is None:
            fail(where, f"{what} {path} is on no volume mount (the root filesystem is read-only)")
        elif what in ("--output_dir", "--data_dir") and "persistentVolumeClaim" not in volumes.get(mount["name"], {}):
            fail(where, f"{what} {path} is not on the shared volume")
    config = fv.get("--config")
    if config:
        vol = volumes.get(mount_for(config, mounts)["name"], {}) if mount_for(config, mounts) else {}
        cm_name = vol.get("configMap", {}).get("name")
        key = os.path.relpath(config, mount_for(config, mounts)["mountPath"]) if cm_name else None
        cms = [d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"] == cm_name]
        if not cms or key not in cms[0].get("data", {}):
            fail(where, f"--config {config} is not a key of a ConfigMap in the rendering")
    secret_refs = [v for v in env.values() if isinstance(v, tuple)]
    cert_vol = next((volumes[m["name"]] for m in mounts if "secret" in volumes.get(m["name"], {})), None)
    if cert_vol or secret_refs:
        name = (cert_vol or {}).get("secret", {}).get("secretName") or secret_refs[0][1]
        keys = certs_secret_keys(binary, name, world)
        for _, sname, key in secret_refs:
            if sname != name or key not in keys:
                fail(where, f"env refers to Secret {sname} key {key}; `ringsam certs --k8s-secret {name} --secret` writes {sorted(keys)}")
        if cert_vol:
            cert_mount = next(m["mountPath"] for m in mounts if volumes.get(m["name"]) is cert_vol)
            for i in range(world):
                for var in ("RINGSAM_CA", "RINGSAM_CERT", "RINGSAM_KEY"):
                    value = env_values(c, i).get(var)
                    if isinstance(value, str) and os.path.relpath(value, cert_mount) not in keys:
                        fail(where, f"pod {i}: {var} {value} is not a file of the Secret {name}")
    return c


def binary_accepts(where, docs, c, binary):
    """Runs the pod's command with its environment, the mounts made local: a flag or TOML the
    binary refuses exits 2 at once; an accepted one goes on to look for its peers, which do not
    exist here, and fails with code 1 after the (shortened) connect timeout."""
    with tempfile.TemporaryDirectory() as tmp:
        remap = {}
        for m in c.get("volumeMounts", []):
            local = os.path.join(tmp, m["name"], m.get("subPath", ""))
            os.makedirs(local, exist_ok=True)
            remap[m["mountPath"]] = local
        for cm in (d for d in docs if d["kind"] == "ConfigMap"):
            for m in c["volumeMounts"]:
                if m["mountPath"] in remap and m["name"] == "config":
                    for k, v in cm["data"].items():
                        with open(os.path.join(remap[m["mountPath"]], k), "w") as f:
                            f.write(v)

        def local(v):
            for mp in sorted(remap, key=len, reverse=True):
                if v == mp or v.startswith(mp + "/"):
                    return remap[mp] + v[len(mp):]
            return v

        env = {"PATH": os.environ.get("PATH", "")}
        for k, v in env_values(c, 0).items():
            env[k] = "0123456789abcdef0123456789abcdef" if isinstance(v, tuple) else local(v)
        env.update({"RINGSAM_CONNECT_TIMEOUT": "1", "RINGSAM_METRICS_ADDR": "127.0.0.1:0", "RINGSAM_THREADS": "1"})
        # The device is not part of the run's configuration: a GPU pod's command is checked on
        # the CPU (this binary may have no CUDA, and this host no GPU), everything else as it is.
        args = ["cpu" if a.startswith("cuda") and i and c["args"][i - 1] == "--device" else local(a) for i, a in enumerate(c["args"])]
        args += ["--max_steps", "1"]
        out = subprocess.run([binary, *args], env=env, capture_output=True, text=True, timeout=120)
        # Data the operator puts on the volume is not here: a refusal that names it (the
        # dataset or the published checkpoint) means the flags and the TOML were accepted.
        data = [local(fv) for k, fv in flag_values(c["args"]).items() if k in ("--data_dir", "--efficientnet_checkpoint_path")]
        missing_data = out.returncode == 2 and any(p in out.stderr for p in data)
        if out.returncode in (0, 2) and not missing_data:
            fail(where, f"`ringsam {' '.join(c['args'])}` with the pod's environment exited {out.returncode}, expected 1 (no peers): {out.stderr.strip()[-800:]}")


def main():
    binary, kubectls = sys.argv[1], sys.argv[2:]
    interface = worker_interface(binary)
    js_schema = jobset_schema()
    checked_workers = 0
    for d in kustomizations():
        renderings = [(k, render(k, d)) for k in kubectls]
        renderings = [(k, r) for k, r in renderings if r is not None]
        if not renderings:
            continue
        first_k, docs = renderings[0]
        for k, other in renderings[1:]:
            if normalized(other) != normalized(docs):
                fail(d, f"{k} and {first_k} render it differently")
        validate(d, docs, js_schema)
        for doc in docs:
            if doc["kind"] == "ConfigMap" and "run.toml" in doc.get("data", {}):
                recipe = RECIPES.get(os.path.basename(d), COMMON_RECIPE if d in ("base", "jobset") else None)
                if recipe and open(recipe).read() != doc["data"]["run.toml"]:
                    fail(d, f"ConfigMap run.toml differs from {recipe}")
            check_other_commands(d, doc, binary)
            runs_worker = any(c.get("args", [None])[0] == "worker" for c in containers(doc))
            if doc["kind"] == "Job" and runs_worker:
                t = doc["spec"]["template"]
                c = check_worker(f"{d}: Job", docs, doc["spec"], t, doc["metadata"]["name"] + "-{i}", t["spec"].get("subdomain"), interface, binary)
            elif doc["kind"] == "JobSet":
                net = doc["spec"].get("network", {})
                if not net.get("enableDNSHostnames"):
                    fail(d, "JobSet without network.enableDNSHostnames: the pods have no DNS names")
                for rj in doc["spec"]["replicatedJobs"]:
                    if rj.get("replicas", 1) != 1:
                        fail(d, "a replicated job with replicas > 1: one ring spans one Job here")
                    host = f"{doc['metadata']['name']}-{rj['name']}-0-{{i}}"
                    sub = net.get("subdomain", doc["metadata"]["name"])
                    c = check_worker(f"{d}: JobSet", docs, rj["template"]["spec"], rj["template"]["spec"]["template"], host, sub, interface, binary)
            else:
                continue
            if c is not None:
                binary_accepts(d, docs, c, binary)
                checked_workers += 1
        print(f"k8s_check: {d}: rendered by {len(renderings)} kustomize(s), {len(docs)} objects validated", file=sys.stderr)
    if checked_workers < 6:
        fail("k8s", f"only {checked_workers} worker templates found")
    if failures:
        print("k8s_check: FAILED:\n  " + "\n  ".join(failures), file=sys.stderr)
        sys.exit(1)
    print(f"k8s_check: ok ({checked_workers} worker pod templates agree with `ringsam worker`)", file=sys.stderr)


if __name__ == "__main__":
    main()
