#!/bin/bash
# Tools: none
# Ship this instance's logs to S3 before it goes away, with `spotwatch ship`:
# smallest files first, gzip-compressed, and stopped cleanly (no half-finished
# multipart uploads) before spotwatch would stop this hook. Objects land at
#   s3://BUCKET/PREFIX/INSTANCE_ID/NOTICE_TIME/<absolute path of the file>.gz
#
# Settings (in /etc/spotwatch/spotwatch.env):
#   SPOTWATCH_S3_BUCKET    bucket to ship to (unset: skip)
#   SPOTWATCH_S3_PREFIX    key prefix (default: none)
#   SPOTWATCH_SHIP_PATHS   files, directories or globs, space-separated
#                          (default: /var/log/app)
#   SPOTWATCH_SHIP_ARGS    more `spotwatch ship` options, e.g.
#                          "--sse aws:kms --kms-key-id alias/logs"
#   SPOTWATCH_BIN          the spotwatch program (default: spotwatch on PATH)
# The instance role needs s3:PutObject and s3:AbortMultipartUpload on
# arn:aws:s3:::BUCKET/PREFIX/* (and kms:GenerateDataKey with SSE-KMS).
# Safe to run twice: the same notice gives the same keys.
# Also on a system shutdown with no notice (SPOTWATCH_EVENT=shutdown): the logs
# are worth as much then, and spotwatch keeps the network up while it runs.
set -euo pipefail

if [[ -z ${SPOTWATCH_S3_BUCKET:-} ]]; then
    echo "ship-logs: SPOTWATCH_S3_BUCKET is not set; not shipping logs, skipping"
    exit 0
fi

# Finish before spotwatch stops this hook. SPOTWATCH_HOOK_DEADLINE is when it
# would (the tighter of the hook timeout and the deadline less its margin);
# older spotwatch versions only gave SPOTWATCH_DEADLINE: work it out from that.
args=()
if [[ -n ${SPOTWATCH_HOOK_DEADLINE:-} ]]; then
    args+=(--deadline "${SPOTWATCH_HOOK_DEADLINE%.*}")
elif [[ -n ${SPOTWATCH_DEADLINE:-} ]]; then
    margin=${SPOTWATCH_DEADLINE_MARGIN:-10}
    timeout=${SPOTWATCH_HOOK_TIMEOUT:-60}
    deadline=$((${SPOTWATCH_DEADLINE%.*} - ${margin%.*}))
    by_timeout=$(($(date +%s) + ${timeout%.*}))
    if ((by_timeout < deadline)); then deadline=$by_timeout; fi
    args+=(--deadline "$deadline")
fi

# Split paths and options on spaces, but leave globs for spotwatch to expand.
set -f
# shellcheck disable=SC2086
exec "${SPOTWATCH_BIN:-spotwatch}" ship ${args[@]+"${args[@]}"} ${SPOTWATCH_SHIP_PATHS:-/var/log/app} ${SPOTWATCH_SHIP_ARGS:-}
