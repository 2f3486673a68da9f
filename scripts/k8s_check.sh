#!/usr/bin/env bash
# Renders and validates k8s/ offline, and checks that its pods agree with `ringsam worker`
# (scripts/k8s_check.py says what exactly). Part of the test command (scripts/test.sh).
#
#   scripts/k8s_check.sh [BINARY]      (default target/debug/ringsam)
#
# Tools: scripts/k8s_tools.sh (kubectl for its built-in kustomize, a venv with
# kubernetes-validate and jsonschema).
set -euo pipefail
cd "$(dirname "$0")/.."
binary=${1:-target/debug/ringsam}
source scripts/k8s_tools.sh
"$K8S_PYTHON" scripts/k8s_check.py "$binary" "${KUBECTLS[@]}"
