#!/bin/bash
# Tools: none
# Tell people and systems: one message per end of the instance, with
# `spotwatch notify` (retries within the deadline, never sent twice for one
# notice, even across a restart). Runs last, so the message says the hooks ran.
#
# Settings (in /etc/spotwatch/spotwatch.env; each unset destination is skipped):
#   SPOTWATCH_WEBHOOK_URL          Slack-compatible incoming webhook ({"text": ...});
#                                  a secret: keep spotwatch.env at mode 0600
#   SPOTWATCH_NOTIFY_WEBHOOK_URL   generic webhook: every notice field as JSON
#   SPOTWATCH_NOTIFY_TEMPLATE      JSON file with {{field}} placeholders for it
#   SPOTWATCH_NOTIFY_HEADER_<NAME> extra header, e.g. SPOTWATCH_NOTIFY_HEADER_AUTHORIZATION
#   SPOTWATCH_NOTIFY_SNS_TOPIC     SNS topic ARN (sns:Publish)
#   SPOTWATCH_NOTIFY_EVENT_BUS     EventBridge bus, "spotwatch Instance Ending" (events:PutEvents)
#   SPOTWATCH_NOTIFY_TAG=true      tag the instance spotwatch:ending=<event>@<time> (ec2:CreateTags)
#   SPOTWATCH_WEBHOOK_TIMEOUT      longest one attempt may take, seconds (default 10)
# HTTP(S)_PROXY and NO_PROXY apply to the webhooks. Docs: docs/actions/notify.md
# Enable: mv 90-notify-webhook.sh.disabled 90-notify-webhook.sh
set -euo pipefail

if [[ -z ${SPOTWATCH_WEBHOOK_URL:-}${SPOTWATCH_NOTIFY_WEBHOOK_URL:-}${SPOTWATCH_NOTIFY_SNS_TOPIC:-}${SPOTWATCH_NOTIFY_EVENT_BUS:-} && ${SPOTWATCH_NOTIFY_TAG:-false} != true ]]; then
    echo "notify: no destination is set (SPOTWATCH_WEBHOOK_URL, SPOTWATCH_NOTIFY_*); skipping"
    exit 0
fi
exec "${SPOTWATCH_BIN:-spotwatch}" notify
