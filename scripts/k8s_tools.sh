# Sourced by scripts/k8s_check.sh and scripts/k8s_local.sh: finds the tools that read k8s/.
#
# KUBECTLS: every kubectl to render with: the one on PATH, and Debian's kubectl 1.20 (kustomize
# v2.0.3, the oldest kustomize the manifests are written for), fetched once into
# ~/.cache/ringsam with `apt-get download` (unpacked, not installed). K8S_PYTHON: the Python of
# .venv-k8s, created once from scripts/k8s-requirements.txt (kubernetes-validate ships the
# Kubernetes schemas: nothing is fetched at check time).
k8s_cache=${XDG_CACHE_HOME:-$HOME/.cache}/ringsam
k8s_legacy=$k8s_cache/kubectl-1.20/usr/bin/kubectl
if [ ! -x "$k8s_legacy" ] && command -v apt-get >/dev/null 2>&1; then
    k8s_tmp=$(mktemp -d)
    if (cd "$k8s_tmp" && { apt-get download -q kubernetes-client >/dev/null 2>&1 \
            || { apt-get update -q >/dev/null 2>&1 && apt-get download -q kubernetes-client >/dev/null 2>&1; }; }); then
        mkdir -p "$k8s_cache/kubectl-1.20" && dpkg -x "$k8s_tmp"/kubernetes-client_*.deb "$k8s_cache/kubectl-1.20"
    fi
    rm -rf "$k8s_tmp"
fi
KUBECTLS=()
command -v kubectl >/dev/null 2>&1 && KUBECTLS+=("$(command -v kubectl)")
[ -x "$k8s_legacy" ] && KUBECTLS+=("$k8s_legacy")
if [ ${#KUBECTLS[@]} = 0 ]; then
    echo "k8s: no kubectl to render k8s/ with (apt-get install kubernetes-client)" >&2
    exit 1
fi
source scripts/venv.sh
ensure_venv .venv-k8s scripts/k8s-requirements.txt
K8S_PYTHON=.venv-k8s/bin/python
