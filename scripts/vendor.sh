#!/usr/bin/env bash
# Fetch the pinned browser dependencies from the npm registry into
# static/vendor/ and verify them against static/vendor/SHA256SUMS.
#
#   scripts/vendor.sh            refetch, verify, install (fails on any mismatch)
#   scripts/vendor.sh --check    refetch and verify only; static/vendor/ is untouched
#   scripts/vendor.sh --update   refetch, install and rewrite SHA256SUMS (after a
#                                deliberate version bump: review the diff!)
#
# Pinned on purpose: npm's `latest` htmx.org is 4.x, which has
# no defineExtension and cannot run htmx-ext-sse; and htmx.org 2.0.11's own
# dist/ext/sse.js is the old htmx-1 extension. We ship htmx.org 2.0.11
# dist/htmx.min.js with htmx-ext-sse 2.2.4 sse.js, both 0BSD.
#
# Needs: npm (the registry only; npm checks each tarball's sha512 integrity),
# tar, sha256sum.
set -euo pipefail

HTMX_VERSION=2.0.11
SSE_VERSION=2.2.4

mode=install
case "${1:-}" in
  "") ;;
  --check) mode=check ;;
  --update) mode=update ;;
  *) echo "usage: $0 [--check|--update]" >&2; exit 2 ;;
esac

root="$(cd "$(dirname "$0")/.." && pwd)"
dest="$root/static/vendor"
sums="$dest/SHA256SUMS"

for tool in npm tar sha256sum; do
  command -v "$tool" >/dev/null 2>&1 || { echo "vendor: $tool not found" >&2; exit 1; }
done

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

echo "vendor: fetching htmx.org@$HTMX_VERSION and htmx-ext-sse@$SSE_VERSION from the npm registry"
(cd "$tmp" && npm pack --silent "htmx.org@$HTMX_VERSION" "htmx-ext-sse@$SSE_VERSION" >/dev/null)

mkdir -p "$tmp/htmx" "$tmp/sse" "$tmp/out"
tar -xzf "$tmp/htmx.org-$HTMX_VERSION.tgz" -C "$tmp/htmx"
tar -xzf "$tmp/htmx-ext-sse-$SSE_VERSION.tgz" -C "$tmp/sse"

# Refuse anything that is not the pinned version, whatever the registry said.
grep -q "\"version\": \"$HTMX_VERSION\"" "$tmp/htmx/package/package.json" || { echo "vendor: htmx.org is not $HTMX_VERSION" >&2; exit 1; }
grep -q "\"version\": \"$SSE_VERSION\"" "$tmp/sse/package/package.json" || { echo "vendor: htmx-ext-sse is not $SSE_VERSION" >&2; exit 1; }
grep -q 'defineExtension' "$tmp/htmx/package/dist/htmx.min.js" || { echo "vendor: htmx.min.js has no defineExtension (htmx 4?)" >&2; exit 1; }

cp "$tmp/htmx/package/dist/htmx.min.js" "$tmp/out/htmx.min.js"
cp "$tmp/htmx/package/LICENSE" "$tmp/out/LICENSE.htmx.org"
cp "$tmp/sse/package/sse.js" "$tmp/out/htmx-ext-sse.js"
cp "$tmp/sse/package/LICENSE" "$tmp/out/LICENSE.htmx-ext-sse"

if [ "$mode" = update ]; then
  (cd "$tmp/out" && sha256sum htmx.min.js htmx-ext-sse.js LICENSE.htmx.org LICENSE.htmx-ext-sse > SHA256SUMS)
else
  [ -f "$sums" ] || { echo "vendor: $sums missing (run with --update once)" >&2; exit 1; }
  cp "$sums" "$tmp/out/SHA256SUMS"
  (cd "$tmp/out" && sha256sum --quiet --strict -c SHA256SUMS) || { echo "vendor: checksum mismatch against $sums" >&2; exit 1; }
  echo "vendor: fetched files match SHA256SUMS"
fi

if [ "$mode" = check ]; then
  # Also verify what is installed.
  (cd "$dest" && sha256sum --quiet --strict -c SHA256SUMS) || { echo "vendor: static/vendor/ differs from SHA256SUMS" >&2; exit 1; }
  echo "vendor: static/vendor/ matches SHA256SUMS"
  exit 0
fi

mkdir -p "$dest"
cp "$tmp/out/"* "$dest/"
(cd "$dest" && sha256sum --quiet --strict -c SHA256SUMS)
echo "vendor: installed into static/vendor/"
