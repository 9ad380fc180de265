#!/usr/bin/env bash
# The runbook's traffic rollback ("Emergency Rollback" / "Complete Application Rollback"),
# the way the runbook does it: kubectl + jq + curl, one service after another, fixed sleeps
# and polling. The baseline that benches/restore_bench compares `rollback run emergency`
# and `rollback run full` against; it is not a procedure to use.
#
# Usage: runbook_traffic_rollback.sh KUBECONFIG NAMESPACE HEALTH_URL_TEMPLATE SERVICE...
#   HEALTH_URL_TEMPLATE contains {service} and {slot}, as in the platform definition.
# Prints "restored <ms>" once every Service selects its standby and "verified <ms>" once
# every service passed its checks, both in milliseconds since the script started.
# SWITCH_SETTLE (default 5) is the runbook's "sleep 5" after each traffic switch.
set -euo pipefail

kubeconfig=$1
namespace=$2
health_template=$3
shift 3
services=("$@")
settle=${SWITCH_SETTLE:-5}
start_ms=$(date +%s%3N)

k() { kubectl --kubeconfig "$kubeconfig" -n "$namespace" "$@"; }
since_start() { echo $(($(date +%s%3N) - start_ms)); }
health_url() { local u=${health_template//\{service\}/$1}; echo "${u//\{slot\}/$2}"; }

declare -A standby
for service in "${services[@]}"; do
    current=$(k get service "$service" -o json | jq -r '.spec.selector.slot')
    if [ "$current" = "blue" ]; then next=green; else next=blue; fi
    standby[$service]=$next
    # "Check if standby is available": running pods of the standby slot.
    running=$(k get pods -l "app=$service,slot=$next" --field-selector=status.phase=Running --no-headers | wc -l)
    if [ "$running" -eq 0 ]; then
        echo "no standby pods for $service" >&2
        exit 1
    fi
    # "Health check standby environment".
    curl -sf --max-time 10 "$(health_url "$service" "$next")" >/dev/null
    k patch service "$service" --type=json \
        -p "[{\"op\": \"replace\", \"path\": \"/spec/selector/slot\", \"value\": \"$next\"}]" >/dev/null
    # "Wait for traffic switch", then "Verify traffic switch".
    sleep "$settle"
    active=$(k get service "$service" -o json | jq -r '.spec.selector.slot')
    if [ "$active" != "$next" ]; then
        echo "traffic switch of $service failed" >&2
        exit 1
    fi
done
echo "restored $(since_start)"

# "Verify full rollback": each Deployment available, then its health endpoint, up to 5 tries
# 10 s apart.
for service in "${services[@]}"; do
    k wait --for=condition=available "deployment/$service-${standby[$service]}" --timeout=300s >/dev/null
    ok=0
    for _ in 1 2 3 4 5; do
        if curl -sf --max-time 10 "$(health_url "$service" "${standby[$service]}")" >/dev/null; then
            ok=1
            break
        fi
        sleep 10
    done
    if [ "$ok" -ne 1 ]; then
        echo "$service failed verification" >&2
        exit 1
    fi
done
echo "verified $(since_start)"
