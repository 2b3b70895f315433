#!/bin/bash
# Tools: kubectl
# Back in service after a stop or hibernation: uncordon this Kubernetes node.
# Needs: kubectl, a kubeconfig allowed to patch nodes (SPOTWATCH_KUBECONFIG)
set -euo pipefail

if ! command -v kubectl >/dev/null; then
    echo "uncordon-kubernetes: kubectl is not installed; skipping"
    exit 0
fi
if [[ -n ${SPOTWATCH_KUBECONFIG:-} ]]; then export KUBECONFIG=$SPOTWATCH_KUBECONFIG; fi
exec kubectl uncordon "${SPOTWATCH_K8S_NODE:-$(hostname)}"
