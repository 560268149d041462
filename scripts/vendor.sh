#!/usr/bin/env bash
# Fetch the pinned browser dependencies from the npm registry and verify them
# against their SHA256SUMS:
#
#   static/vendor/   served to browsers (embedded in the binary):
#     htmx.org 2.0.11 dist/htmx.min.js      → htmx.min.js
#     htmx-ext-sse 2.2.4 sse.js             → htmx-ext-sse.js
#     htmx.org 4.0.1 dist/htmx.min.js       → htmx4.min.js
#     htmx.org 4.0.1 dist/ext/hx-sse.min.js → htmx4-ext-sse.min.js
#   e2e/testdata/    for the browser tests only, never served:
#     axe-core 4.14.1 axe.min.js            → axe.min.js
#
#   scripts/vendor.sh            refetch, verify, install (fails on any mismatch)
#   scripts/vendor.sh --check    refetch and verify only; nothing is touched
#   scripts/vendor.sh --update   refetch, install and rewrite both SHA256SUMS (after a
#                                deliberate version bump: review the diff!)
#
# Pinned on purpose: npm's `latest` htmx.org is 4.x, which has no
# defineExtension and cannot run htmx-ext-sse; and htmx.org 2.0.11's own
# dist/ext/sse.js is the old htmx-1 extension. htmx 4 brings its own SSE
# extension (dist/ext/hx-sse.js, in the htmx.org package itself). All htmx
# files are 0BSD; axe-core is MPL-2.0 (its LICENSE files go next to it).
#
# Needs: npm (the registry only; npm checks each tarball's sha512 integrity),
# tar, sha256sum.
set -euo pipefail

HTMX_VERSION=2.0.11
SSE_VERSION=2.2.4
HTMX4_VERSION=4.0.1
AXE_VERSION=4.14.1

mode=install
case "${1:-}" in
  "") ;;
  --check) mode=check ;;
  --update) mode=update ;;
  *) echo "usage: $0 [--check|--update]" >&2; exit 2 ;;
esac

root="$(cd "$(dirname "$0")/.." && pwd)"

for tool in npm tar sha256sum; do
  command -v "$tool" >/dev/null 2>&1 || { echo "vendor: $tool not found" >&2; exit 1; }
done

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

echo "vendor: fetching htmx.org@$HTMX_VERSION, htmx-ext-sse@$SSE_VERSION, htmx.org@$HTMX4_VERSION, axe-core@$AXE_VERSION from the npm registry"
(cd "$tmp" && npm pack --silent "htmx.org@$HTMX_VERSION" "htmx-ext-sse@$SSE_VERSION" "htmx.org@$HTMX4_VERSION" "axe-core@$AXE_VERSION" >/dev/null)

mkdir -p "$tmp/htmx" "$tmp/sse" "$tmp/htmx4" "$tmp/axe" "$tmp/out/static" "$tmp/out/e2e"
tar -xzf "$tmp/htmx.org-$HTMX_VERSION.tgz" -C "$tmp/htmx"
tar -xzf "$tmp/htmx-ext-sse-$SSE_VERSION.tgz" -C "$tmp/sse"
tar -xzf "$tmp/htmx.org-$HTMX4_VERSION.tgz" -C "$tmp/htmx4"
tar -xzf "$tmp/axe-core-$AXE_VERSION.tgz" -C "$tmp/axe"

# Refuse anything that is not the pinned version, whatever the registry said.
want() { grep -q "\"version\": \"$2\"" "$1/package/package.json" || { echo "vendor: $1 is not $2" >&2; exit 1; }; }
want "$tmp/htmx" "$HTMX_VERSION"
want "$tmp/sse" "$SSE_VERSION"
want "$tmp/htmx4" "$HTMX4_VERSION"
want "$tmp/axe" "$AXE_VERSION"
grep -q 'defineExtension' "$tmp/htmx/package/dist/htmx.min.js" || { echo "vendor: htmx.min.js has no defineExtension (htmx 4?)" >&2; exit 1; }
grep -q 'registerExtension' "$tmp/htmx4/package/dist/htmx.min.js" || { echo "vendor: htmx4.min.js has no registerExtension (not htmx 4?)" >&2; exit 1; }

s="$tmp/out/static"
cp "$tmp/htmx/package/dist/htmx.min.js" "$s/htmx.min.js"
cp "$tmp/htmx/package/LICENSE" "$s/LICENSE.htmx.org"
cp "$tmp/sse/package/sse.js" "$s/htmx-ext-sse.js"
cp "$tmp/sse/package/LICENSE" "$s/LICENSE.htmx-ext-sse"
cp "$tmp/htmx4/package/dist/htmx.min.js" "$s/htmx4.min.js"
cp "$tmp/htmx4/package/dist/ext/hx-sse.min.js" "$s/htmx4-ext-sse.min.js"
cp "$tmp/htmx4/package/LICENSE" "$s/LICENSE.htmx.org-4"
e="$tmp/out/e2e"
cp "$tmp/axe/package/axe.min.js" "$e/axe.min.js"
cp "$tmp/axe/package/LICENSE" "$e/LICENSE.axe-core"
cp "$tmp/axe/package/LICENSE-3RD-PARTY.txt" "$e/LICENSE-3RD-PARTY.axe-core"

# install_set NAME DEST FILES...: verify (or, with --update, record) one set.
install_set() {
  local name="$1" dest="$2"; shift 2
  local src="$tmp/out/$name" sums="$dest/SHA256SUMS"
  if [ "$mode" = update ]; then
    (cd "$src" && sha256sum "$@" > SHA256SUMS)
  else
    [ -f "$sums" ] || { echo "vendor: $sums missing (run with --update once)" >&2; exit 1; }
    cp "$sums" "$src/SHA256SUMS"
    (cd "$src" && sha256sum --quiet --strict -c SHA256SUMS) || { echo "vendor: checksum mismatch against $sums" >&2; exit 1; }
    echo "vendor: fetched files match $sums"
  fi
  if [ "$mode" = check ]; then
    (cd "$dest" && sha256sum --quiet --strict -c SHA256SUMS) || { echo "vendor: $dest differs from its SHA256SUMS" >&2; exit 1; }
    echo "vendor: $dest matches its SHA256SUMS"
    return
  fi
  mkdir -p "$dest"
  cp "$src/"* "$dest/"
  (cd "$dest" && sha256sum --quiet --strict -c SHA256SUMS)
  echo "vendor: installed into $dest"
}

install_set static "$root/static/vendor" \
  htmx.min.js htmx-ext-sse.js LICENSE.htmx.org LICENSE.htmx-ext-sse \
  htmx4.min.js htmx4-ext-sse.min.js LICENSE.htmx.org-4
install_set e2e "$root/e2e/testdata" \
  axe.min.js LICENSE.axe-core LICENSE-3RD-PARTY.axe-core
