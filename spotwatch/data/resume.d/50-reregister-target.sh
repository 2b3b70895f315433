#!/bin/bash
# Tools: aws
# The way back: put this instance back into its load balancer's target group,
# undoing an end hook that deregistered it (so it took no new requests while
# it went away) when the end turned out not to come: the instance is back after
# a stop, hibernate or reboot, a rebalance recommendation or a maintenance
# event was withdrawn, or a shutdown was a plain reboot.
#
# spotwatch runs the hooks in /etc/spotwatch/resume.d once for such an end,
# with SPOTWATCH_PHASE=resume and the end's own variables (SPOTWATCH_EVENT,
# SPOTWATCH_NOTICE_ID, SPOTWATCH_NOTICE_TIME, SPOTWATCH_INSTANCE_ID, ...).
#
# Settings (in /etc/spotwatch/spotwatch.env):
#   SPOTWATCH_TARGET_GROUP_ARN  the target group (unset: skip)
#   SPOTWATCH_TARGET_PORT       the port to register (default: the group's own)
# The instance role needs elasticloadbalancing:RegisterTargets on the group.
# Enable: mv 50-reregister-target.sh.disabled 50-reregister-target.sh
# Safe to run twice: registering a registered target changes nothing.
set -euo pipefail

arn=${SPOTWATCH_TARGET_GROUP_ARN:-}
if [[ -z $arn ]]; then
    echo "reregister: SPOTWATCH_TARGET_GROUP_ARN is not set; skipping"
    exit 0
fi
id=${SPOTWATCH_INSTANCE_ID:-unknown}
if [[ $id == unknown ]]; then
    echo "reregister: the instance id is unknown (IMDS unreachable?); cannot register" >&2
    exit 1
fi

target="Id=$id"
if [[ -n ${SPOTWATCH_TARGET_PORT:-} ]]; then target+=",Port=$SPOTWATCH_TARGET_PORT"; fi
aws elbv2 register-targets --target-group-arn "$arn" --targets "$target" \
    ${SPOTWATCH_REGION:+--region "$SPOTWATCH_REGION"}
echo "reregister: $id is back in $arn (after ${SPOTWATCH_EVENT:-?} ${SPOTWATCH_ACTION:-?})"
