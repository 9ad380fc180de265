#!/usr/bin/env bash
# Starts and stops a real Kubernetes control plane (etcd, kube-apiserver,
# kube-controller-manager, kube-scheduler) with kwok faking the nodes, as plain local processes
# bound to 127.0.0.1. No container runtime, no downloads: every binary comes from
# testbed/provision.sh.
#
# Usage:
#   testbed/cluster.sh up     NAME WORKDIR   # prints the kubeconfig path as its last stdout line
#   testbed/cluster.sh down   NAME WORKDIR
#   testbed/cluster.sh status NAME WORKDIR
#   testbed/cluster.sh env    NAME WORKDIR   # prints shell exports (KUBECONFIG, KWOK_WORKDIR, PATH)
#
# WORKDIR holds everything of one cluster (config, kubeconfig, certificates, etcd data, logs,
# pid files); use a fresh one per run. kwokctl picks free ports, so several clusters can run
# side by side as long as each has its own NAME/WORKDIR.
#
# Environment:
#   TESTBED_BIN      directory with the binaries (default: run testbed/provision.sh)
#   TESTBED_NODES    number of fake nodes (default 2)
#   TESTBED_KUBECTL  kubectl to use (default: kubectl on PATH)
set -euo pipefail

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
readonly SCRIPT_DIR
readonly NODES="${TESTBED_NODES:-2}"
readonly KUBECTL="${TESTBED_KUBECTL:-kubectl}"

log() { printf '[cluster] %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

usage() {
  sed -n '8,13p' "${BASH_SOURCE[0]}" >&2
  exit 2
}

(($# >= 3)) || usage
readonly CMD=$1 NAME=$2
mkdir -p "$3"
WORKDIR="$(cd "$3" && pwd)"
readonly WORKDIR
readonly CONFIG="${WORKDIR}/kwokctl.yaml"
readonly KUBECONFIG_PATH="${WORKDIR}/kubeconfig"
readonly CLUSTER_DIR="${WORKDIR}/clusters/${NAME}"
readonly LOCK_DIR="${ROLLBACK_CACHE:-/var/cache/rollback}/testbed"

[[ "${NODES}" =~ ^[1-9][0-9]*$ ]] || die "TESTBED_NODES must be a positive integer: ${NODES}"
[[ "${NAME}" =~ ^[a-z0-9]([-a-z0-9]*[a-z0-9])?$ ]] || die "cluster name must be a DNS label: ${NAME}"

# kwokctl keeps its state (and looks for default config) under KWOK_WORKDIR; pointing it at
# WORKDIR keeps clusters apart and leaves ~/.kwok untouched.
export KWOK_WORKDIR="${WORKDIR}"

# `up` makes sure the binaries are built (seconds when they are); the other commands only
# need to know where they are.
bin_dir() {
  if [[ -n "${TESTBED_BIN:-}" ]]; then
    printf '%s\n' "${TESTBED_BIN}"
  elif [[ "${CMD}" == "up" ]]; then
    "${SCRIPT_DIR}/provision.sh" | tail -1
  else
    "${SCRIPT_DIR}/provision.sh" --print-bin
  fi
}

BIN="$(bin_dir)"
readonly BIN
[[ -x "${BIN}/kwokctl" ]] || die "no kwokctl in ${BIN}; run testbed/provision.sh"

kwokctl() { "${BIN}/kwokctl" "$@"; }
kc() { "${KUBECTL}" --kubeconfig "${KUBECONFIG_PATH}" "$@"; }

# Prints N TCP ports below 32768 (outside the kernel's ephemeral range, so outgoing
# connections never take them) that no socket on the machine uses, counting down like kwokctl.
# kwokctl would find free ports itself, but it probes each one by briefly listening on the
# wildcard address as well as on 127.0.0.1; reading `ss` instead binds nothing.
pick_ports() {
  local n=$1 port count=0 used
  used="$(ss -Htan | awk '{ n = split($4, a, ":"); print a[n] }' | sort -u)"
  for ((port = 32767; port > 10000 && count < n; port--)); do
    if ! grep -qx "${port}" <<<"${used}"; then
      printf '%s\n' "${port}"
      count=$((count + 1))
    fi
  done
  ((count == n)) || die "could not find ${n} free ports"
}

write_config() {
  # Every binary is named explicitly: kwokctl downloads whatever is left unset, and nothing
  # can be downloaded here. bindAddress defaults to 0.0.0.0; 127.0.0.1 keeps every listener
  # (apiserver, etcd client and peer, controller-manager, scheduler, kwok-controller) on
  # loopback. The versions are read from the binaries themselves (they are stamped).
  local kubectl_path
  kubectl_path="$(command -v "${KUBECTL}")" || die "kubectl not found"
  local -a ports
  mapfile -t ports < <(pick_ports 6)
  ((${#ports[@]} == 6)) || die "could not find 6 free ports"
  cat >"${CONFIG}" <<EOF
kind: KwokctlConfiguration
apiVersion: config.kwok.x-k8s.io/v1alpha1
options:
  runtime: binary
  bindAddress: 127.0.0.1
  etcdBinary: ${BIN}/etcd
  kubeApiserverBinary: ${BIN}/kube-apiserver
  kubeControllerManagerBinary: ${BIN}/kube-controller-manager
  kubeSchedulerBinary: ${BIN}/kube-scheduler
  kwokControllerBinary: ${BIN}/kwok
  kubectlBinary: ${kubectl_path}
  cacheDir: ${WORKDIR}/cache
  etcdPeerPort: ${ports[0]}
  etcdPort: ${ports[1]}
  kubeApiserverPort: ${ports[2]}
  kwokControllerPort: ${ports[3]}
  kubeControllerManagerPort: ${ports[4]}
  kubeSchedulerPort: ${ports[5]}
EOF
}

# Prints the pids recorded by kwokctl for this cluster, one per line.
cluster_pids() {
  local f pid
  [[ -d "${CLUSTER_DIR}/pids" ]] || return 0
  for f in "${CLUSTER_DIR}"/pids/*.pid; do
    [[ -f "${f}" ]] || continue
    pid="$(tr -dc '0-9' <"${f}")"
    if [[ -n "${pid}" ]] && kill -0 "${pid}" 2>/dev/null; then
      printf '%s\n' "${pid}"
    fi
  done
}

# Prints pids of any process still running from this cluster's directory (a component that
# outlived `kwokctl delete`, or whose pid file is gone). Matched on the full path of the
# cluster directory in its command line, so other clusters and other processes are spared.
leftover_pids() {
  local p cmdline
  for p in /proc/[0-9]*; do
    p=${p#/proc/}
    [[ "${p}" != "$$" ]] || continue
    cmdline="$( { tr '\0' ' ' <"/proc/${p}/cmdline"; } 2>/dev/null)" || continue
    if [[ "${cmdline}" == *"${CLUSTER_DIR}/"* ]]; then
      printf '%s\n' "${p}"
    fi
  done
}

# Fails if any of the cluster's processes listens on a non-loopback address; traffic off
# loopback is not allowed on this machine.
check_loopback_only() {
  local pids bad=0 line
  pids="$( { cluster_pids; leftover_pids; } | sort -u)"
  [[ -n "${pids}" ]] || die "no running components found for cluster ${NAME}"
  local listeners
  listeners="$(ss -H -ltunp 2>/dev/null || true)"
  local pid
  while read -r pid; do
    while read -r line; do
      [[ -n "${line}" ]] || continue
      # Column 5 is the local address:port.
      local addr
      addr="$(awk '{ print $5 }' <<<"${line}")"
      case "${addr}" in
        127.* | \[::1\]:*) ;;
        *)
          log "component pid ${pid} ($(tr '\0' ' ' <"/proc/${pid}/cmdline" | cut -c1-80)) listens on ${addr}"
          bad=1
          ;;
      esac
    done < <(grep -E "pid=${pid}," <<<"${listeners}" || true)
  done <<<"${pids}"
  if ((bad)); then
    return 1
  fi
  log "all listeners are on loopback:"
  while read -r pid; do
    grep -E "pid=${pid}," <<<"${listeners}" | awk '{ print "  " $1 " " $5 " " $7 }' >&2 || true
  done <<<"${pids}"
}

wait_for() {
  local what=$1 timeout=$2
  shift 2
  local deadline=$((SECONDS + timeout))
  until "$@" >/dev/null 2>&1; do
    if ((SECONDS >= deadline)); then
      log "timed out after ${timeout}s waiting for ${what}"
      return 1
    fi
    sleep 1
  done
}

UP_DONE=0
# Runs on any exit of `up` (a failed command under set -e, die, a signal): unless the cluster
# came up, keep its logs for diagnosis and take down whatever was started.
on_up_exit() {
  local rc=$?
  if ((UP_DONE == 0)); then
    log "up failed; tearing down (component logs kept in ${WORKDIR}/failed-logs)"
    if [[ -d "${CLUSTER_DIR}/logs" ]]; then
      rm -rf -- "${WORKDIR}/failed-logs"
      cp -r -- "${CLUSTER_DIR}/logs" "${WORKDIR}/failed-logs" || true
    fi
    cmd_down || true
    ((rc != 0)) || rc=1
  fi
  exit "${rc}"
}

node_count_at_least() {
  local n
  n="$(kc get nodes -o name 2>/dev/null | wc -l)"
  ((n >= $1))
}

# One attempt at bringing the cluster up; runs as a child process so that its EXIT trap can
# tear down a half-started cluster and the parent can try again.
cmd_up_once() {
  if [[ -d "${CLUSTER_DIR}" ]]; then
    die "cluster ${NAME} already exists in ${WORKDIR}; run 'down' first or use a fresh WORKDIR"
  fi
  # The parent holds the creation lock on fd 8; the components must not inherit it, or a
  # leftover process would keep it held.
  exec 8>&-
  write_config
  log "creating cluster ${NAME} in ${WORKDIR}"
  trap on_up_exit EXIT
  trap 'exit 130' INT TERM
  kwokctl --config "${CONFIG}" create cluster \
    --name "${NAME}" \
    --kubeconfig "${KUBECONFIG_PATH}" \
    --wait 120s >&2
  # kwokctl logs a failed --wait but still exits 0, so readiness is checked here as well.
  wait_for "kube-apiserver /readyz" 60 kc get --raw /readyz
  kwokctl --name "${NAME}" scale node --replicas "${NODES}" >&2
  wait_for "${NODES} nodes" 60 node_count_at_least "${NODES}"
  kc wait --for=condition=Ready node --all --timeout=60s >&2
  # Pods are refused until the controller-manager has created the default ServiceAccount.
  wait_for "the default ServiceAccount" 60 kc -n default get serviceaccount default
  check_loopback_only || die "a component listens off loopback"
  UP_DONE=1
}

cmd_up() {
  local start=${SECONDS}
  if [[ -d "${CLUSTER_DIR}" ]]; then
    die "cluster ${NAME} already exists in ${WORKDIR}; run 'down' first or use a fresh WORKDIR"
  fi
  # Ports are picked as free when the config is written but only taken when the components
  # start, so two clusters created at the same moment could pick the same ones (etcd then
  # fails with "address already in use"). Creation is serialised machine-wide; the lock is
  # held until every component listens, after which the next pick sees those ports taken.
  mkdir -p "${LOCK_DIR}"
  exec 8>"${LOCK_DIR}/.cluster-create.lock"
  if ! flock -n 8; then
    log "another cluster is being created; waiting for its lock"
    flock -w 600 8 || die "timed out waiting for ${LOCK_DIR}/.cluster-create.lock"
  fi
  local attempt
  for attempt in 1 2; do
    if TESTBED_BIN="${BIN}" "${BASH_SOURCE[0]}" __up_once "${NAME}" "${WORKDIR}"; then
      flock -u 8
      log "cluster ${NAME} up in $((SECONDS - start))s"
      printf '%s\n' "${KUBECONFIG_PATH}"
      return 0
    fi
    log "attempt ${attempt} to bring up ${NAME} failed"
  done
  die "could not bring up cluster ${NAME}; see ${WORKDIR}/failed-logs"
}

kill_pids() {
  local pids=$1 pid
  [[ -n "${pids}" ]] || return 0
  while read -r pid; do
    kill -TERM "${pid}" 2>/dev/null || true
  done <<<"${pids}"
  local deadline=$((SECONDS + 10))
  while ((SECONDS < deadline)); do
    local alive=0
    while read -r pid; do
      if kill -0 "${pid}" 2>/dev/null; then alive=1; fi
    done <<<"${pids}"
    ((alive)) || return 0
    sleep 0.5
  done
  while read -r pid; do
    kill -KILL "${pid}" 2>/dev/null || true
  done <<<"${pids}"
}

cmd_down() {
  local start=${SECONDS}
  local pids
  # Remember the pids first: `kwokctl delete` removes the pid files.
  pids="$( { cluster_pids; leftover_pids; } | sort -u)"
  if [[ -d "${CLUSTER_DIR}" ]]; then
    kwokctl delete cluster --name "${NAME}" --kubeconfig "${KUBECONFIG_PATH}" >&2 || \
      log "kwokctl delete cluster failed; killing processes directly"
  fi
  kill_pids "$( { printf '%s\n' "${pids}"; leftover_pids; } | grep -E '^[0-9]+$' | sort -u || true)"
  local left
  left="$(leftover_pids)"
  if [[ -n "${left}" ]]; then
    die "processes still running for ${NAME}: $(tr '\n' ' ' <<<"${left}")"
  fi
  rm -rf -- "${CLUSTER_DIR}"
  log "cluster ${NAME} down in $((SECONDS - start))s"
}

cmd_status() {
  if [[ ! -d "${CLUSTER_DIR}" ]]; then
    log "cluster ${NAME}: not created in ${WORKDIR}"
    return 1
  fi
  kwokctl get components --name "${NAME}" || true
  local pids
  pids="$(cluster_pids)"
  log "running component pids: $(tr '\n' ' ' <<<"${pids}")"
  check_loopback_only || true
  kc get nodes -o wide
  printf '%s\n' "${KUBECONFIG_PATH}"
}

cmd_env() {
  printf 'export KUBECONFIG=%q\n' "${KUBECONFIG_PATH}"
  printf 'export KWOK_WORKDIR=%q\n' "${WORKDIR}"
  # $PATH is meant literally: it expands in the shell that evals this output.
  # shellcheck disable=SC2016
  printf 'export PATH=%q:"$PATH"\n' "${BIN}"
}

case "${CMD}" in
  up) cmd_up ;;
  __up_once) cmd_up_once ;;
  down) cmd_down ;;
  status) cmd_status ;;
  env) cmd_env ;;
  *) usage ;;
esac
