#!/bin/bash
# Tools: aws
# Back in service: set this ECS container instance ACTIVE again.
# Needs: the aws CLI; ecs:ListContainerInstances, ecs:UpdateContainerInstancesState
set -euo pipefail

cluster=${SPOTWATCH_ECS_CLUSTER:-}
if [[ -z $cluster ]]; then
    echo "activate-ecs: SPOTWATCH_ECS_CLUSTER is not set; skipping"
    exit 0
fi
region=(--region "${SPOTWATCH_REGION:-${AWS_DEFAULT_REGION:-us-east-1}}")
arn=$(aws "${region[@]}" ecs list-container-instances --cluster "$cluster" \
    --filter "ec2InstanceId == ${SPOTWATCH_INSTANCE_ID:?}" \
    --query 'containerInstanceArns[0]' --output text)
if [[ -z $arn || $arn == None ]]; then
    echo "activate-ecs: ${SPOTWATCH_INSTANCE_ID} is not in cluster $cluster; skipping"
    exit 0
fi
aws "${region[@]}" ecs update-container-instances-state --cluster "$cluster" \
    --container-instances "$arn" --status ACTIVE --output text --query 'failures' >/dev/null
echo "activate-ecs: $arn is ACTIVE"
