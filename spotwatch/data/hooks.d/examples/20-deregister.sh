#!/bin/bash
# Tools: none
# Leave the load balancers: deregister this instance from every ELB target group
# and Classic load balancer it is in, then wait for the draining (never past the
# deadline), with `spotwatch deregister`. Runs before the drains and the log
# shipping, so no new request arrives while the application winds down.
# Needs: the instance role's IAM in docs/actions/deregister.md
# Resume: resume.d/examples/20-register.sh puts the instance back
#
# Settings (in /etc/spotwatch/spotwatch.env):
#   SPOTWATCH_TARGET_GROUPS  target group ARNs, space- or comma-separated
#                            (default: those of the Auto Scaling group, else a scan)
#   SPOTWATCH_CLASSIC_LBS    Classic load balancer names (same)
#   SPOTWATCH_BIN            the spotwatch program (default: spotwatch on PATH)
# Docs: docs/actions/deregister.md
set -euo pipefail

exec "${SPOTWATCH_BIN:-spotwatch}" deregister
