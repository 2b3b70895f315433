#!/bin/bash
# Tell people: post the notice to a Slack-compatible incoming webhook
# (Slack, Mattermost and Rocket.Chat accept {"text": "..."}).
#
# Settings (in /etc/spotwatch/spotwatch.env):
#   SPOTWATCH_WEBHOOK_URL      the webhook URL (unset: skip); it is a secret,
#                              keep spotwatch.env at mode 0600
#   SPOTWATCH_WEBHOOK_TIMEOUT  longest the POST may take, seconds (default 10)
# Enable: mv 90-notify-webhook.sh.disabled 90-notify-webhook.sh
set -euo pipefail

url=${SPOTWATCH_WEBHOOK_URL:-}
if [[ -z $url ]]; then
    echo "notify: SPOTWATCH_WEBHOOK_URL is not set; skipping"
    exit 0
fi

left=${SPOTWATCH_SECONDS_LEFT:-120}
left=${left%.*}
text="${SPOTWATCH_EVENT:-spot-interruption} on ${SPOTWATCH_INSTANCE_ID:-${HOSTNAME:-?}}"
text+=" (${SPOTWATCH_INSTANCE_TYPE:-?}, ${SPOTWATCH_AZ:-?}): ${SPOTWATCH_ACTION:-?}"
text+=" at ${SPOTWATCH_NOTICE_TIME:-?}, ${left} s left"
if [[ ${SPOTWATCH_EVENT:-} == shutdown ]]; then
    text="${SPOTWATCH_INSTANCE_ID:-${HOSTNAME:-?}} (${SPOTWATCH_INSTANCE_TYPE:-?}, ${SPOTWATCH_AZ:-?}):"
    text+=" shutting down (${SPOTWATCH_SHUTDOWN:-unknown}), no notice, ${left} s left"
fi
if [[ ${SPOTWATCH_DRILL:-} == 1 ]]; then text="[drill] $text"; fi

# JSON string escaping for the characters that can occur here.
text=${text//\\/\\\\}
text=${text//\"/\\\"}
payload="{\"text\": \"$text\"}"

# `timeout` bounds the POST with its retries: SPOTWATCH_WEBHOOK_TIMEOUT, cut
# short to end before spotwatch would stop this hook (deadline less margin).
max=${SPOTWATCH_WEBHOOK_TIMEOUT:-10}
margin=${SPOTWATCH_DEADLINE_MARGIN:-10}
budget=$((left - ${margin%.*} - 1))
if ((budget < max)); then max=$((budget > 1 ? budget : 1)); fi

# --fail: an HTTP error status is a failure; --proto: never file:// or others.
timeout "$max" curl --silent --show-error --fail --proto '=http,https' \
    --max-time "$max" --retry 3 --retry-delay 1 --retry-connrefused \
    --header 'Content-Type: application/json' --data "$payload" \
    --output /dev/null "$url"
echo "notify: posted to the webhook"
