#!/bin/bash
# Tools: scontrol squeue
# Drain this Slurm node (no new jobs; the reason says why) and requeue the jobs
# on it that cannot finish in the time left, so the scheduler runs them again
# elsewhere instead of counting a failure. Jobs that can finish are left to.
# Needs: scontrol and squeue, run as SlurmUser or root (a Slurm operator);
#        docs/actions/drain-slurm.md
# Resume: resume.d/examples/30-resume-slurm.sh
#
# Settings: SPOTWATCH_SLURM_NODE  the node's Slurm name (default: short host name)
set -euo pipefail

if ! command -v scontrol >/dev/null; then
    echo "drain-slurm: scontrol is not installed; skipping"
    exit 0
fi
node=${SPOTWATCH_SLURM_NODE:-$(hostname -s)}
reason="spotwatch: ${SPOTWATCH_EVENT:-interruption} ${SPOTWATCH_ACTION:-} at ${SPOTWATCH_NOTICE_TIME:-?}"

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

scontrol update NodeName="$node" State=DRAIN Reason="$reason"

# %L is the time a job has left: [days-]hours:minutes:seconds, or UNLIMITED.
seconds() {
    local t=$1 days=0 h=0 m=0 s=0
    case $t in UNLIMITED|NOT_SET|INVALID|"") echo 999999999; return ;; esac
    if [[ $t == *-* ]]; then days=${t%%-*}; t=${t#*-}; fi
    IFS=: read -r -a parts <<<"$t"
    case ${#parts[@]} in
        3) h=${parts[0]} m=${parts[1]} s=${parts[2]} ;;
        2) m=${parts[0]} s=${parts[1]} ;;
        *) s=${parts[0]} ;;
    esac
    echo $(((10#$days * 86400) + (10#$h * 3600) + (10#$m * 60) + 10#$s))
}
while read -r job left; do
    [[ -n $job ]] || continue
    if (($(seconds "$left") > budget)); then
        echo "drain-slurm: job $job needs $left, more than the ${budget} s left: requeued"
        scontrol requeue "$job" || echo "drain-slurm: job $job could not be requeued" >&2
    else
        echo "drain-slurm: job $job can finish ($left left)"
    fi
done < <(squeue --noheader --nodelist="$node" --states=RUNNING --format='%i %L')
echo "drain-slurm: node $node drained: $reason"
