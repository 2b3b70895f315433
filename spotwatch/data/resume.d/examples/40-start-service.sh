#!/bin/bash
# Tools: systemctl
# Back in service: start the service the stop hook stopped.
# Needs: systemctl, root
set -euo pipefail

unit=${SPOTWATCH_STOP_SERVICE:-}
if [[ -z $unit ]]; then
    echo "start-service: SPOTWATCH_STOP_SERVICE is not set; skipping"
    exit 0
fi
exec systemctl start "$unit"
