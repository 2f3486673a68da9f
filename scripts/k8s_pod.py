"""Turns pod INDEX of the rendered Job in MANIFEST into a `docker run` command line, as the Job
controller and kubelet would run it (scripts/k8s_local.sh uses it; no cluster needed).

    python3 scripts/k8s_pod.py MANIFEST INDEX --image TAG --network NET --ip IP \
        --volumes DIR --secrets DIR [--env NAME=VALUE ...]

Prints the words NUL-separated, `docker run` first, then the pod's grace period on stderr's
last line as `grace=N`. What maps to what:
- the pod's name `<job>-<index>`, and its DNS name `<job>-<index>.<subdomain>` as a network alias;
- env as Kubernetes resolves it: JOB_COMPLETION_INDEX from the completion-index annotation,
  `$(VAR)` references to earlier variables, Secret keys from DIR/secrets/<secret>/<key>,
  limits.cpu for a resourceFieldRef;
- a persistentVolumeClaim mount with subPath → a bind mount of DIR/volumes/<claim>/<subPath>;
  a configMap → DIR/volumes/configmap-<name>/ (its keys written there); a Secret →
  DIR/secrets/<secret>/; an emptyDir → a tmpfs (memory-backed for /dev/shm: --shm-size);
- securityContext (the pod's, the container's over it): user and group, fsGroup as a
  supplementary group, capabilities dropped, no privilege escalation, a read-only root
  filesystem; resources.limits: --cpus and --memory; `command` as the entry point.
"""

import argparse
import math
import os
import re
import sys

import yaml

INDEX_ANNOTATION = "metadata.annotations['batch.kubernetes.io/job-completion-index']"


def quantity(q):
    """A Kubernetes quantity ("1.5Gi", "500m", "2") as a number."""
    units = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12, "m": 1e-3, "": 1}
    m = re.fullmatch(r"(\d+(?:\.\d+)?)([A-Za-z]*)", str(q))
    if not m or m.group(2) not in units:
        sys.exit(f"k8s_pod: quantity {q!r} not understood")
    return float(m.group(1)) * units[m.group(2)]


def quantity_bytes(q):
    return int(quantity(q))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("manifest")
    ap.add_argument("index", type=int)
    ap.add_argument("--image", required=True)
    ap.add_argument("--network", required=True)
    ap.add_argument("--ip", required=True)
    ap.add_argument("--volumes", required=True)
    ap.add_argument("--secrets", required=True)
    ap.add_argument("--env", action="append", default=[], help="NAME=VALUE replacing the manifest's")
    a = ap.parse_args()

    docs = [d for d in yaml.safe_load_all(open(a.manifest)) if d]
    job = next(d for d in docs if d["kind"] == "Job")
    pod = job["spec"]["template"]["spec"]
    c = pod["containers"][0]
    name = f"{job['metadata']['name']}-{a.index}"
    words = ["docker", "run", "-d", "--name", name, "--hostname", name, "--network", a.network, "--ip", a.ip]
    if "subdomain" in pod:
        words += ["--network-alias", f"{name}.{pod['subdomain']}"]
    words += ["--pull=never"]

    limits = c.get("resources", {}).get("limits", {})
    env = {}
    for e in c.get("env", []):
        if "value" in e:
            env[e["name"]] = re.sub(r"\$\(([A-Za-z0-9_]+)\)", lambda m: env.get(m.group(1), m.group(0)), e["value"])
            continue
        src = e["valueFrom"]
        if src.get("fieldRef", {}).get("fieldPath") == INDEX_ANNOTATION:
            env[e["name"]] = str(a.index)
        elif "secretKeyRef" in src:
            ref = src["secretKeyRef"]
            with open(os.path.join(a.secrets, ref["name"], ref["key"])) as f:
                env[e["name"]] = f.read()
        elif src.get("resourceFieldRef", {}).get("resource") == "limits.cpu":
            # Kubernetes rounds up to whole cores (divisor 1); without a limit it would give the
            # node's allocatable cores: the check's pods always have a limit.
            if "cpu" not in limits:
                sys.exit("k8s_pod: limits.cpu referenced but not set")
            env[e["name"]] = str(max(1, math.ceil(quantity(limits["cpu"]))))
        else:
            sys.exit(f"k8s_pod: env {e['name']}: unsupported source {src}")
    env["JOB_COMPLETION_INDEX"] = str(a.index)  # the Job controller's, in every container
    for kv in a.env:
        k, v = kv.split("=", 1)
        env[k] = v
    for k, v in env.items():
        words += ["--env", f"{k}={v}"]

    volumes = {v["name"]: v for v in pod.get("volumes", [])}
    for m in c.get("volumeMounts", []):
        v = volumes[m["name"]]
        ro = ",readonly" if m.get("readOnly") else ""
        if "persistentVolumeClaim" in v:
            src = os.path.join(a.volumes, v["persistentVolumeClaim"]["claimName"], m.get("subPath", ""))
            os.makedirs(src, exist_ok=True)
            words += ["--mount", f"type=bind,source={os.path.abspath(src)},target={m['mountPath']}{ro}"]
        elif "configMap" in v:
            cm = next(d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"] == v["configMap"]["name"])
            src = os.path.join(a.volumes, "configmap-" + cm["metadata"]["name"])
            os.makedirs(src, exist_ok=True)
            for k, text in cm.get("data", {}).items():
                with open(os.path.join(src, k), "w") as f:
                    f.write(text)
            words += ["--mount", f"type=bind,source={os.path.abspath(src)},target={m['mountPath']},readonly"]
        elif "secret" in v:
            src = os.path.join(a.secrets, v["secret"]["secretName"])
            words += ["--mount", f"type=bind,source={os.path.abspath(src)},target={m['mountPath']},readonly"]
        elif "emptyDir" in v and m["mountPath"] == "/dev/shm":
            words += ["--shm-size", str(quantity_bytes(v["emptyDir"].get("sizeLimit", "64Mi")))]
        elif "emptyDir" in v:
            words += ["--mount", f"type=tmpfs,target={m['mountPath']},tmpfs-mode=1777"]
        else:
            sys.exit(f"k8s_pod: volume {m['name']}: unsupported kind")

    sec = pod.get("securityContext", {})
    csec = c.get("securityContext", {})
    user = csec.get("runAsUser", sec.get("runAsUser"))
    if user is not None:
        words += ["--user", f"{user}:{csec.get('runAsGroup', sec.get('runAsGroup', user))}"]
    if "fsGroup" in sec:
        words += ["--group-add", str(sec["fsGroup"])]
    for cap in csec.get("capabilities", {}).get("drop", []):
        words += ["--cap-drop", cap]
    if csec.get("allowPrivilegeEscalation") is False:
        words += ["--security-opt", "no-new-privileges"]
    if csec.get("readOnlyRootFilesystem"):
        words += ["--read-only"]
    if "cpu" in limits:
        words += ["--cpus", str(quantity(limits["cpu"]))]
    if "memory" in limits:
        words += ["--memory", str(quantity_bytes(limits["memory"]))]
    command = c.get("command", [])
    if command:
        words += ["--entrypoint", command[0]]
    words += [a.image, *command[1:], *c.get("args", [])]
    sys.stdout.write("\0".join(words) + "\0")
    print(f"grace={pod.get('terminationGracePeriodSeconds', 30)}", file=sys.stderr)


if __name__ == "__main__":
    main()
