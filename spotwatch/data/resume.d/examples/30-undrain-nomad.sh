#!/bin/bash
# Tools: nomad
# Back in service: end the drain and make this Nomad client eligible again.
# Needs: the nomad CLI, a token with node:write
set -euo pipefail

if ! command -v nomad >/dev/null; then
    echo "undrain-nomad: nomad is not installed; skipping"
    exit 0
fi
exec nomad node drain -self -disable -yes
