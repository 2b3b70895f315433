#!/bin/bash
# Tools: systemctl
# Checkpoint an application before the instance goes away: send its systemd
# service a signal, then wait until it has written a fresh checkpoint file.
#
# Settings (in /etc/spotwatch/spotwatch.env):
#   SPOTWATCH_CHECKPOINT_SERVICE  unit to signal, e.g. myapp.service (unset: skip)
#   SPOTWATCH_CHECKPOINT_SIGNAL   signal that makes it checkpoint (default SIGUSR1)
#   SPOTWATCH_CHECKPOINT_FILE     file it writes when done (unset: do not wait)
#   SPOTWATCH_CHECKPOINT_WAIT     longest wait in seconds (default 60)
# Enable: mv 10-checkpoint.sh.disabled 10-checkpoint.sh
# Safe to run twice: it asks for, and waits for, another checkpoint.
set -euo pipefail

service=${SPOTWATCH_CHECKPOINT_SERVICE:-}
signal=${SPOTWATCH_CHECKPOINT_SIGNAL:-SIGUSR1}
file=${SPOTWATCH_CHECKPOINT_FILE:-}
wait_s=${SPOTWATCH_CHECKPOINT_WAIT:-60}

if [[ -z $service ]]; then
    echo "checkpoint: SPOTWATCH_CHECKPOINT_SERVICE is not set; nothing to checkpoint, skipping"
    exit 0
fi

pid=$(systemctl show --property=MainPID --value "$service")
if [[ -z $pid || $pid == 0 ]]; then
    echo "checkpoint: $service is not running; nothing to checkpoint" >&2
    exit 1
fi

# Older than the checkpoint we ask for; `-nt` compares to the nanosecond.
marker=$(mktemp)
trap 'rm -f "$marker"' EXIT

kill -s "$signal" "$pid"
echo "checkpoint: sent $signal to $service (pid $pid)"
[[ -n $file ]] || exit 0

# Give up before spotwatch would stop this hook (deadline less its margin).
left=${SPOTWATCH_SECONDS_LEFT:-$wait_s}
margin=${SPOTWATCH_DEADLINE_MARGIN:-10}
left=$((${left%.*} - ${margin%.*}))
if ((left < wait_s)); then wait_s=$left; fi
end=$((SECONDS + wait_s))
while ((SECONDS < end)); do
    if [[ $file -nt $marker ]]; then
        echo "checkpoint: $service wrote $file"
        exit 0
    fi
    sleep 0.2
done
echo "checkpoint: $service did not write $file within ${wait_s} s" >&2
exit 1
