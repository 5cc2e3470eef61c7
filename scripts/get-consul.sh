#!/usr/bin/env bash
# Puts a Consul binary at .tools/bin/consul: the one on PATH if there is one, else Debian bullseye's
# consul package, downloaded from the Debian archive, checked against its SHA-256 and unpacked here
# (nothing is installed system-wide).
set -euo pipefail
cd "$(dirname "$0")/.."
dest=.tools/bin/consul
[ -x "$dest" ] && exit 0
mkdir -p .tools/bin
if command -v consul >/dev/null 2>&1; then
  ln -sf "$(command -v consul)" "$dest"
  exit 0
fi
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
deb_path=pool/main/c/consul/consul_1.8.7+dfsg1-2+b3_amd64.deb
sha256=e4e888bba104daba1d9161f49bfc52649a7e4efd45b1a7ead5bc54f2cb9c89d9
case "$(uname -m)" in
  x86_64) ;;
  *) echo "get-consul: no pinned Consul package for $(uname -m); put 'consul' on PATH" >&2; exit 1 ;;
esac
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
echo "get-consul: downloading $mirror/$deb_path" >&2
curl -fsSL --retry 3 -o "$tmp/consul.deb" "$mirror/$deb_path"
echo "$sha256  $tmp/consul.deb" | sha256sum -c --quiet -
if command -v dpkg-deb >/dev/null 2>&1; then
  dpkg-deb -x "$tmp/consul.deb" "$tmp/root"
else
  (cd "$tmp" && ar x consul.deb && mkdir root && tar -xf data.tar.* -C root)
fi
cp "$tmp/root/usr/bin/consul" "$dest"
chmod 0755 "$dest"
"$dest" version | sed -n 1p >&2  # sed reads it all: head would leave consul a SIGPIPE, and pipefail a failure
