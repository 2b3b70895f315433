#!/bin/bash
# Tools: systemctl
# Stop a systemd service cleanly, with the time left as its grace: stop it, and
# when it has not stopped by then, SIGKILL it (its own TimeoutStopSec= may be
# shorter; a longer one would outlive the instance).
# Needs: systemctl, root (or polkit rights to stop and kill the unit)
# Resume: resume.d/examples/40-start-service.sh
#
# Settings: SPOTWATCH_STOP_SERVICE  the unit, e.g. myapp.service (unset: skip)
set -euo pipefail

unit=${SPOTWATCH_STOP_SERVICE:-}
if [[ -z $unit ]]; then
    echo "stop-service: SPOTWATCH_STOP_SERVICE is not set; skipping"
    exit 0
fi

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

systemctl stop --no-block "$unit"
while (($(date +%s) < by)); do
    if ! systemctl is-active --quiet "$unit"; then
        echo "stop-service: $unit stopped"
        exit 0
    fi
    sleep 0.5
done
echo "stop-service: $unit still stopping after ${budget} s: SIGKILL" >&2
systemctl kill --signal=SIGKILL "$unit"
exit 1
