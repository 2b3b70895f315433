#!/bin/bash
# Tools: none
# Start the replacement now: when this instance is in an Auto Scaling group,
# detach it without lowering the desired capacity, so the group launches the
# replacement while this one still runs its hooks. Never for a rebalance
# recommendation (add --on-rebalance to change that), never twice.
# Needs: autoscaling:DescribeAutoScalingInstances, autoscaling:DetachInstances
#
# Opt-in: it changes the group. Docs: docs/actions/replace.md
set -euo pipefail

exec "${SPOTWATCH_BIN:-spotwatch}" replace
