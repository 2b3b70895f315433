#!/bin/bash
# Tools: nomad
# Drain this Nomad client: `nomad node drain -self -enable -deadline` from the
# time left; system jobs (log shippers, node agents) stay to the end
# (-ignore-system). Waits for the drain to finish (no -detach).
# Needs: the nomad CLI and a token with node:write (NOMAD_ADDR, NOMAD_TOKEN in
#        spotwatch.env); docs/actions/drain-nomad.md
# Resume: resume.d/examples/30-undrain-nomad.sh
set -euo pipefail

if ! command -v nomad >/dev/null; then
    echo "drain-nomad: nomad is not installed; skipping"
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

exec nomad node drain -self -enable -ignore-system -yes -deadline "${budget}s"
