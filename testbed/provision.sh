#!/usr/bin/env bash
# Builds the binaries of a local, Docker-free Kubernetes test bed from Go modules:
# etcd, kube-apiserver, kube-controller-manager, kube-scheduler, kwok, kwokctl and helm.
#
# Nothing here is downloaded from a release page: everything is compiled from modules served
# by the Go module proxy, so it works where only package registries can be reached.
#
# The binaries live outside the repository, in
#   ${ROLLBACK_CACHE:-/var/cache/rollback}/testbed/<key>/bin
# where <key> names every pinned version, so changing a version builds a fresh set beside the
# old one instead of mixing them. Go's module and build caches sit under ${ROLLBACK_CACHE}/go
# so a re-run (or a rebuild after a version bump) reuses earlier compilation.
#
# Usage:  BIN=$(testbed/provision.sh | tail -1)
#         testbed/provision.sh --print-bin   # only print the bin directory, build nothing
# Progress goes to stderr; the last line of stdout is the bin directory.
set -euo pipefail

# Pinned versions. etcd is the newest 3.6.x the module proxy had when this was written;
# Kubernetes 1.36 needs etcd >= 3.5, and Debian's packaged etcd is too old.
readonly K8S_VERSION=v1.36.3
readonly ETCD_VERSION=v3.6.16
readonly KWOK_VERSION=v0.8.0
readonly HELM_VERSION=v3.21.4

readonly CACHE="${ROLLBACK_CACHE:-/var/cache/rollback}"
readonly KEY="k8s-${K8S_VERSION}_etcd-${ETCD_VERSION}_kwok-${KWOK_VERSION}_helm-${HELM_VERSION}"
readonly ROOT="${CACHE}/testbed/${KEY}"
readonly BIN="${ROOT}/bin"
readonly SRC="${ROOT}/src"

if [[ "${1:-}" == "--print-bin" ]]; then
  printf '%s\n' "${BIN}"
  exit 0
fi

log() { printf '[provision] %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

GO="${GO:-}"
if [[ -z "${GO}" ]]; then
  if command -v go >/dev/null 2>&1; then
    GO="$(command -v go)"
  elif [[ -x /usr/local/go/bin/go ]]; then
    GO=/usr/local/go/bin/go
  else
    die "no Go toolchain found (set GO=/path/to/go)"
  fi
fi
readonly GO

export GOMODCACHE="${CACHE}/go/mod"
export GOCACHE="${CACHE}/go/build"
# Static binaries: they must not depend on whatever libc a later machine has.
export CGO_ENABLED=0
# Strip source paths from the binaries and never use a vendor directory.
export GOFLAGS="-trimpath -mod=mod"
# Use the installed toolchain; fetching another one would make the build depend on it.
export GOTOOLCHAIN=local
# The wrapper modules below are throw-away; no need to record them anywhere.
export GOWORK=off

mkdir -p "${BIN}" "${SRC}" "${GOMODCACHE}" "${GOCACHE}"

# Two test runs may call this at once; only one may build, the other waits and then finds
# everything in place.
exec 9>"${CACHE}/testbed/.provision.lock"
if ! flock -n 9; then
  log "another provision is running; waiting for its lock"
  flock 9
fi

# Temporary outputs are removed on any exit, so an interrupted build leaves nothing half-done
# under a final name.
TMP_OUTPUTS=()
cleanup() {
  local f
  for f in "${TMP_OUTPUTS[@]+"${TMP_OUTPUTS[@]}"}"; do
    rm -rf -- "${f}"
  done
}
trap cleanup EXIT

# The go builds share 2 cores with other compilers; a lower priority keeps those responsive.
gobuild() { nice -n 10 "${GO}" build "$@"; }

# has_version NAME EXPECTED CMD...: true if BIN/NAME exists and CMD's output contains EXPECTED.
has_version() {
  local name=$1 expected=$2
  shift 2
  [[ -x "${BIN}/${name}" ]] || return 1
  local out
  out="$("${BIN}/${name}" "$@" 2>&1 || true)"
  if [[ "${out}" == *"${expected}"* ]]; then
    return 0
  fi
  log "${name}: present but reports '${out%%$'\n'*}', expected ${expected}; rebuilding"
  return 1
}

# install_built NAME TMPFILE: atomic rename into place (same file system, so rename(2)).
install_built() {
  chmod 0755 "$2"
  mv -f -- "$2" "${BIN}/$1"
}

TOTAL_START=${SECONDS}
declare -A TIMES=()
BUILT=()

timed() {
  local name=$1
  shift
  local start=${SECONDS}
  log "${name}: building"
  "$@"
  TIMES[${name}]=$((SECONDS - start))
  BUILT+=("${name}")
  log "${name}: built in ${TIMES[${name}]}s"
}

# --- Kubernetes control plane -------------------------------------------------------------
# k8s.io/kubernetes cannot be `go install`ed: its go.mod replaces every k8s.io staging module
# with a ./staging path that only exists in its git tree. A wrapper module repeats those
# replaces pointing at the published staging modules (v0.X.Y for Kubernetes v1.X.Y).
prepare_k8s_module() {
  local dir="${SRC}/k8s"
  if [[ -f "${dir}/.ready" ]]; then
    return 0
  fi
  rm -rf -- "${dir}"
  mkdir -p "${dir}"
  local gomod staging_version
  gomod="$("${GO}" mod download -json "k8s.io/kubernetes@${K8S_VERSION}" | jq -r .GoMod)"
  [[ -f "${gomod}" ]] || die "could not download k8s.io/kubernetes@${K8S_VERSION}"
  staging_version="v0.${K8S_VERSION#v1.}"
  (
    cd "${dir}"
    "${GO}" mod init local/kbuild >/dev/null 2>&1
    # Same language version and GODEBUG defaults as upstream, so the binaries behave alike.
    local gov
    gov="$(awk '$1 == "go" { print $2; exit }' "${gomod}")"
    "${GO}" mod edit -go="${gov}"
    if grep -q '^godebug ' "${gomod}"; then
      "${GO}" mod edit -godebug="$(awk '$1 == "godebug" { print $2; exit }' "${gomod}")"
    fi
    local mod
    while read -r mod; do
      "${GO}" mod edit -replace="${mod}=${mod}@${staging_version}"
    done < <(awk '$2 == "=>" && $3 ~ /^\.\/staging\// { print $1 }' "${gomod}")
    "${GO}" mod edit -require="k8s.io/kubernetes@${K8S_VERSION}"
    nice -n 10 "${GO}" get \
      "k8s.io/kubernetes/cmd/kube-apiserver@${K8S_VERSION}" \
      "k8s.io/kubernetes/cmd/kube-controller-manager@${K8S_VERSION}" \
      "k8s.io/kubernetes/cmd/kube-scheduler@${K8S_VERSION}" >&2
  )
  touch "${dir}/.ready"
}

build_k8s() {
  local name=$1
  local minor=${K8S_VERSION#v1.}
  minor=${minor%%.*}
  # Without these stamps the binaries report v0.0.0 and clients and kwokctl misjudge them.
  local ldflags="-s -w"
  ldflags+=" -X k8s.io/component-base/version.gitVersion=${K8S_VERSION}"
  ldflags+=" -X k8s.io/component-base/version.gitMajor=1"
  ldflags+=" -X k8s.io/component-base/version.gitMinor=${minor}"
  ldflags+=" -X k8s.io/component-base/version.gitTreeState=clean"
  local tmp="${BIN}/.${name}.tmp.$$"
  TMP_OUTPUTS+=("${tmp}")
  (cd "${SRC}/k8s" && gobuild -ldflags "${ldflags}" -o "${tmp}" "k8s.io/kubernetes/cmd/${name}")
  install_built "${name}" "${tmp}"
}

# --- etcd -------------------------------------------------------------------------------------
# go.etcd.io/etcd/server/v3 also carries replace directives, so it is built from a wrapper
# module as well; its main package is the etcd server binary.
build_etcd() {
  local dir="${SRC}/etcd"
  if [[ ! -f "${dir}/.ready" ]]; then
    rm -rf -- "${dir}"
    mkdir -p "${dir}"
    (
      cd "${dir}"
      "${GO}" mod init local/etcdbuild >/dev/null 2>&1
      nice -n 10 "${GO}" get "go.etcd.io/etcd/server/v3@${ETCD_VERSION}" >&2
    )
    touch "${dir}/.ready"
  fi
  local tmp="${BIN}/.etcd.tmp.$$"
  TMP_OUTPUTS+=("${tmp}")
  (cd "${dir}" && gobuild -ldflags "-s -w" -o "${tmp}" go.etcd.io/etcd/server/v3)
  install_built etcd "${tmp}"
}

# --- kwok, kwokctl, helm: plain `go install` of a module version ---------------------------
# GOBIN points at a private temporary directory, so the final name only ever appears by rename.
go_install() {
  local name=$1 pkg=$2 ldflags=$3
  local tmpdir="${BIN}/.${name}.tmpdir.$$"
  TMP_OUTPUTS+=("${tmpdir}")
  mkdir -p "${tmpdir}"
  (cd "${SRC}" && GOBIN="${tmpdir}" nice -n 10 "${GO}" install -ldflags "${ldflags}" "${pkg}")
  install_built "${name}" "${tmpdir}/${name}"
  rm -rf -- "${tmpdir}"
}

ETCD_PLAIN=${ETCD_VERSION#v}
if ! has_version etcd "etcd Version: ${ETCD_PLAIN}" --version; then
  timed etcd build_etcd
fi

for name in kube-apiserver kube-controller-manager kube-scheduler; do
  if ! has_version "${name}" "Kubernetes ${K8S_VERSION}" --version; then
    if [[ ! -f "${SRC}/k8s/.ready" ]]; then
      timed k8s-module prepare_k8s_module
    fi
    timed "${name}" build_k8s "${name}"
  fi
done

# kwok reports its version from a compiled-in constant, which matches the module version.
if ! has_version kwok "${KWOK_VERSION#v}" --version; then
  timed kwok go_install kwok "sigs.k8s.io/kwok/cmd/kwok@${KWOK_VERSION}" "-s -w"
fi
if ! has_version kwokctl "${KWOK_VERSION#v}" --version; then
  timed kwokctl go_install kwokctl "sigs.k8s.io/kwok/cmd/kwokctl@${KWOK_VERSION}" "-s -w"
fi

# Helm's version comes from an ldflag; unstamped it says v3.x-dev-ish and charts with a
# kubeVersion/helm constraint may refuse it.
if ! has_version helm "${HELM_VERSION}" version --template '{{.Version}}'; then
  timed helm go_install helm "helm.sh/helm/v3/cmd/helm@${HELM_VERSION}" \
    "-s -w -X helm.sh/helm/v3/internal/version.version=${HELM_VERSION}"
fi

if ((${#BUILT[@]} == 0)); then
  log "all binaries present with the pinned versions; nothing built"
else
  for name in "${BUILT[@]}"; do
    log "time ${name}: ${TIMES[${name}]}s"
  done
fi
log "total: $((SECONDS - TOTAL_START))s"
echo "${BIN}"
