#!/usr/bin/env bash
# Fetches ONNX Runtime C/C++ headers from Debian's libonnxruntime-dev package into
# cpp_bench/third_party/onnxruntime-headers/include (or DEST/include) and prints that folder.
#
# Nothing is installed into the system and the system's apt configuration is not changed:
# apt-get runs with its own temporary source list, package lists and cache, pointed at the
# same Debian mirror as /etc/apt/sources* (suite trixie by default: bookworm has no
# onnxruntime), `apt-get download` fetches the .deb (checked against the signed release files),
# and `dpkg-deb -x` unpacks it in a temporary folder from which only the headers are kept.
#
# Environment: SRBENCH_DEBIAN_MIRROR (default: the system's Debian mirror, else
# http://deb.debian.org/debian), SRBENCH_DEBIAN_SUITE (default trixie),
# SRBENCH_DEBIAN_KEYRING (default /usr/share/keyrings/debian-archive-keyring.gpg).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
dest="${1:-$here/third_party/onnxruntime-headers}"
inc="$dest/include"

if [[ -f "$inc/onnxruntime_cxx_api.h" && -f "$inc/onnxruntime_c_api.h" ]]; then
  echo "$inc"
  exit 0
fi

die() {
  echo "fetch_ort_headers.sh: error: $*" >&2
  echo "fetch_ort_headers.sh: alternatively download an official ONNX Runtime release" \
       "(onnxruntime-linux-x64-<version>.tgz) and build with ONNXRUNTIME_ROOT=<its folder> cpp_bench/build.sh" >&2
  exit 1
}

command -v apt-get >/dev/null 2>&1 || die "apt-get not found (not a Debian/Ubuntu system)"
command -v dpkg-deb >/dev/null 2>&1 || die "dpkg-deb not found"

suite="${SRBENCH_DEBIAN_SUITE:-trixie}"
keyring="${SRBENCH_DEBIAN_KEYRING:-/usr/share/keyrings/debian-archive-keyring.gpg}"
[[ -r "$keyring" ]] || die "Debian archive keyring $keyring not found (apt-get install debian-archive-keyring)"

system_mirror() {
  # deb822 (*.sources: "URIs: ...") and one-line ("deb [opts] URI suite ...") formats; the first
  # Debian archive URI that is not the security archive.
  local f uri
  for f in /etc/apt/sources.list.d/*.sources /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
    [[ -r "$f" ]] || continue
    uri="$(sed -n -e 's/^[[:space:]]*URIs:[[:space:]]*//p' \
                  -e 's/^[[:space:]]*deb[[:space:]]\+\(\[[^]]*\][[:space:]]\+\)\{0,1\}\([^[:space:]]\+\).*/\2/p' "$f" \
           | tr ' ' '\n' | grep -E '^(https?|file)://.*/debian/?$' | head -n 1 || true)"
    if [[ -n "$uri" ]]; then
      echo "${uri%/}"
      return
    fi
  done
  echo "http://deb.debian.org/debian"
}
mirror="${SRBENCH_DEBIAN_MIRROR:-$(system_mirror)}"
arch="$(dpkg --print-architecture 2>/dev/null || echo amd64)"

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/lists/partial" "$work/cache/archives/partial" "$work/parts" "$work/deb" "$work/x"
echo "deb [signed-by=$keyring arch=$arch] $mirror $suite main" >"$work/sources.list"
apt_opts=(
  -q
  -o "Dir::Etc::SourceList=$work/sources.list"
  -o "Dir::Etc::SourceParts=$work/parts"
  -o "Dir::Etc::Preferences=$work/parts/none"
  -o "Dir::Etc::PreferencesParts=$work/parts"
  -o "Dir::State::Lists=$work/lists"
  -o "Dir::Cache=$work/cache"
  -o "Dir::State::status=$work/status"
  -o "APT::Architecture=$arch"
  # The temporary folders belong to the caller; apt's _apt sandbox user could not write there.
  -o "APT::Sandbox::User=$(id -un)"
)
: >"$work/status"

echo "fetch_ort_headers.sh: libonnxruntime-dev from $mirror $suite ($arch)" >&2
apt-get "${apt_opts[@]}" update >"$work/update.log" 2>&1 \
  || { cat "$work/update.log" >&2; die "apt-get update for $mirror $suite failed"; }
(cd "$work/deb" && apt-get "${apt_opts[@]}" download libonnxruntime-dev >"$work/download.log" 2>&1) \
  || { cat "$work/download.log" >&2; die "apt-get download libonnxruntime-dev from $mirror $suite failed"; }
deb="$(ls "$work"/deb/libonnxruntime-dev_*.deb 2>/dev/null | head -n 1)"
[[ -n "$deb" ]] || die "apt-get download produced no .deb"
version="$(dpkg-deb -f "$deb" Version)"
dpkg-deb -x "$deb" "$work/x"
src="$work/x/usr/include/onnxruntime"
[[ -f "$src/onnxruntime_cxx_api.h" ]] || die "$deb has no usr/include/onnxruntime/onnxruntime_cxx_api.h"

rm -rf "$dest.tmp"
mkdir -p "$dest.tmp"
cp -a "$src" "$dest.tmp/include"
printf 'libonnxruntime-dev %s (%s %s %s)\n' "$version" "$mirror" "$suite" "$arch" >"$dest.tmp/SOURCE"
rm -rf "$dest"
mv "$dest.tmp" "$dest"
echo "fetch_ort_headers.sh: headers of libonnxruntime-dev $version in $inc" >&2
echo "$inc"
