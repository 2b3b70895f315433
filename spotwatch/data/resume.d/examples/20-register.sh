#!/bin/bash
# Tools: none
# Back in service: register this instance again in the target groups and Classic
# load balancers 20-deregister.sh took it out of (`spotwatch deregister --restore`).
# Needs: elasticloadbalancing:RegisterTargets, RegisterInstancesWithLoadBalancer
set -euo pipefail

exec "${SPOTWATCH_BIN:-spotwatch}" deregister --restore
