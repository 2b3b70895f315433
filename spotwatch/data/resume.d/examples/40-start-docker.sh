#!/bin/bash
# Tools: docker
# Back in service: start the containers the stop hook stopped.
# Needs: the docker CLI and access to the daemon
set -euo pipefail

list=${SPOTWATCH_STATE_DIR:-/var/lib/spotwatch}/docker-stopped
if ! command -v docker >/dev/null || [[ ! -s $list ]]; then
    echo "start-docker: nothing to start"
    exit 0
fi
mapfile -t ids <"$list"
docker start "${ids[@]}"
rm -f "$list"
