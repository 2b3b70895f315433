#!/bin/bash
# Tools: scontrol
# Back in service: return this Slurm node to service, if spotwatch drained it
# (a drain an administrator set, with another reason, is left alone).
# Needs: scontrol, run as SlurmUser or root
set -euo pipefail

if ! command -v scontrol >/dev/null; then
    echo "resume-slurm: scontrol is not installed; skipping"
    exit 0
fi
node=${SPOTWATCH_SLURM_NODE:-$(hostname -s)}
if ! scontrol show node "$node" | grep -q 'Reason=spotwatch'; then
    echo "resume-slurm: node $node was not drained by spotwatch; left as it is"
    exit 0
fi
scontrol update NodeName="$node" State=RESUME
echo "resume-slurm: node $node back in service"
