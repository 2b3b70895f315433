#!/bin/bash
# Tools: aws
# Drain this ECS container instance: set it DRAINING (services move their tasks
# elsewhere; no new tasks land here), then wait for its tasks to stop, no longer
# than the time left. (The ECS agent's ECS_ENABLE_SPOT_INSTANCE_DRAINING=true
# does the same on its own for the spot notice only.)
# Needs: the aws CLI; ecs:ListContainerInstances, ecs:UpdateContainerInstancesState,
#        ecs:DescribeContainerInstances; docs/actions/drain-ecs.md
# Resume: resume.d/examples/30-activate-ecs.sh
#
# Settings: SPOTWATCH_ECS_CLUSTER  the cluster (unset: skip)
set -euo pipefail

cluster=${SPOTWATCH_ECS_CLUSTER:-}
if [[ -z $cluster ]]; then
    echo "drain-ecs: SPOTWATCH_ECS_CLUSTER is not set; skipping"
    exit 0
fi
region=(--region "${SPOTWATCH_REGION:-${AWS_DEFAULT_REGION:-us-east-1}}")

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

arn=$(aws "${region[@]}" ecs list-container-instances --cluster "$cluster" \
    --filter "ec2InstanceId == ${SPOTWATCH_INSTANCE_ID:?}" \
    --query 'containerInstanceArns[0]' --output text)
if [[ -z $arn || $arn == None ]]; then
    echo "drain-ecs: ${SPOTWATCH_INSTANCE_ID} is not in cluster $cluster; skipping"
    exit 0
fi
aws "${region[@]}" ecs update-container-instances-state --cluster "$cluster" \
    --container-instances "$arn" --status DRAINING --output text --query 'failures' >/dev/null
echo "drain-ecs: $arn is DRAINING"
while (($(date +%s) < by)); do
    running=$(aws "${region[@]}" ecs describe-container-instances --cluster "$cluster" \
        --container-instances "$arn" --query 'containerInstances[0].runningTasksCount' \
        --output text)
    if [[ $running == 0 ]]; then
        echo "drain-ecs: no task left"
        exit 0
    fi
    sleep 2
done
echo "drain-ecs: tasks still running at the end of the ${budget} s"
