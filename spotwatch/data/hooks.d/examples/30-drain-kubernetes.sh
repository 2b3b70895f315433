#!/bin/bash
# Tools: kubectl
# Drain this Kubernetes node: cordon it, evict the ordinary pods, then those
# labelled to go last (a logging agent that is not a DaemonSet), with
# `kubectl drain --timeout` from the time left. DaemonSets (node agents, log
# shippers) are left running to the end.
# Needs: kubectl and a kubeconfig allowed to patch nodes, list pods and create
#        pods/eviction (SPOTWATCH_KUBECONFIG); docs/actions/drain-kubernetes.md
# Resume: resume.d/examples/30-uncordon-kubernetes.sh
#
# Settings (in /etc/spotwatch/spotwatch.env):
#   SPOTWATCH_K8S_NODE        node name (default: the host name)
#   SPOTWATCH_KUBECONFIG      kubeconfig for kubectl (default: kubectl's own)
#   SPOTWATCH_K8S_LAST_LABEL  pods with this label go last (default spotwatch.io/drain-last)
#   SPOTWATCH_K8S_LAST_SECONDS  seconds kept for them (default 10)
#   SPOTWATCH_RESERVE_AFTER   seconds kept for the hooks after this one (default 30)
set -euo pipefail

if ! command -v kubectl >/dev/null; then
    echo "drain-kubernetes: kubectl is not installed; skipping"
    exit 0
fi
node=${SPOTWATCH_K8S_NODE:-$(hostname)}
last=${SPOTWATCH_K8S_LAST_LABEL:-spotwatch.io/drain-last}
if [[ -n ${SPOTWATCH_KUBECONFIG:-} ]]; then export KUBECONFIG=$SPOTWATCH_KUBECONFIG; fi

# Seconds this hook may use: until spotwatch would stop it (SPOTWATCH_HOOK_DEADLINE),
# and never into the SPOTWATCH_RESERVE_AFTER seconds (default 30) kept for the
# hooks after it (shipping logs, notifying) before the deadline less its margin.
now=$(date +%s)
end=${SPOTWATCH_DEADLINE:-$((now + 120))}
by=$((${end%.*} - ${SPOTWATCH_DEADLINE_MARGIN:-10} - ${SPOTWATCH_RESERVE_AFTER:-30}))
hook_end=${SPOTWATCH_HOOK_DEADLINE:-$by}
if ((${hook_end%.*} - 2 < by)); then by=$((${hook_end%.*} - 2)); fi
budget=$((by - now))
if ((budget < 1)); then budget=1; fi

last_budget=${SPOTWATCH_K8S_LAST_SECONDS:-10}
first=$((budget - last_budget))
if ((first < 1)); then first=1; fi
# A pod's own grace period may be longer than the time there is: cut it short.
grace=$((first > 3 ? first - 2 : 1))

kubectl cordon "$node"
status=0
kubectl drain "$node" --ignore-daemonsets --delete-emptydir-data --force \
    --pod-selector="!$last" --grace-period="$grace" --timeout="${first}s" || status=$?
rest=$((by - $(date +%s)))
if ((rest < 1)); then rest=1; fi
kubectl drain "$node" --ignore-daemonsets --delete-emptydir-data --force \
    --pod-selector="$last" --grace-period="$((rest > 3 ? rest - 2 : 1))" --timeout="${rest}s" \
    || status=$?
echo "drain-kubernetes: node $node drained (${budget} s given)"
exit "$status"
