#!/bin/bash
# Tools: docker
# Stop the Docker containers cleanly: `docker stop --time` with the time left as
# their grace (SIGTERM, then SIGKILL when it runs out), all at once. The ids go
# to the state directory for the resume hook.
# Needs: the docker CLI and access to the daemon (root, or the docker group)
# Resume: resume.d/examples/40-start-docker.sh
#
# Settings: SPOTWATCH_DOCKER_FILTER  a `docker ps --filter` (default: every running container)
set -euo pipefail

if ! command -v docker >/dev/null; then
    echo "stop-docker: docker is not installed; skipping"
    exit 0
fi
filter=()
if [[ -n ${SPOTWATCH_DOCKER_FILTER:-} ]]; then filter=(--filter "$SPOTWATCH_DOCKER_FILTER"); fi

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

mapfile -t ids < <(docker ps --quiet ${filter[@]+"${filter[@]}"})
if ((${#ids[@]} == 0)); then
    echo "stop-docker: no container running"
    exit 0
fi
state=${SPOTWATCH_STATE_DIR:-/var/lib/spotwatch}
printf '%s\n' "${ids[@]}" >"$state/docker-stopped" 2>/dev/null || true
grace=$((budget > 2 ? budget - 2 : 1))
docker stop --time "$grace" "${ids[@]}"
echo "stop-docker: ${#ids[@]} container(s) stopped (grace ${grace} s)"
