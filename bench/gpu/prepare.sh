#!/usr/bin/env bash
# Prepares what a run on a network-less GPU node needs, inside the checkout (ignored by git):
#   .gl/        Debian's Vulkan loader and GL vendor-neutral dispatch libraries (the NVIDIA Vulkan ICD
#               is libGLX_nvidia.so.0, which needs libglvnd), plus vulkaninfo for diagnosis;
#   .devcarry/  the Deno binary (xz-compressed, ~31 MB) and `deno bundle`d entry points, so that no
#               node_modules has to travel.
# Usage: bash bench/gpu/prepare.sh [entry.ts ...]   (default: bench/gpu/probe.ts)
set -euo pipefail
cd "$(dirname "$0")/../.."
grep -qx '/.gl/' .git/info/exclude 2>/dev/null || echo /.gl/ >> .git/info/exclude
grep -qx '/.devcarry/' .git/info/exclude 2>/dev/null || echo /.devcarry/ >> .git/info/exclude
mkdir -p .gl .devcarry /tmp/amd64/partial
o='-oAPT::Architecture=amd64 -oAPT::Architectures=amd64 -oDir::State::Lists=/tmp/amd64'
if ! ls .gl/libvulkan1_*.deb >/dev/null 2>&1; then
  apt-get $o update >/dev/null
  (cd .gl && apt-get $o download libvulkan1 libegl1 libglvnd0 libopengl0 libgl1 libglx0 libgles2 vulkan-tools \
    libx11-6 libxcb1 libxau6 libxdmcp6 libwayland-client0 libbsd0 libmd0 libxext6 libffi8)
fi
deno_bin="$(command -v deno)"
[ -s .devcarry/deno.xz ] || xz -T2 -6 -c "$deno_bin" > .devcarry/deno.xz
entries=("$@"); [ ${#entries[@]} -gt 0 ] || entries=(bench/gpu/probe.ts)
for e in "${entries[@]}"; do
  name="$(basename "${e%.ts}")"
  deno bundle --platform=deno -o ".devcarry/$name.js" "$e"
done
du -sh .gl .devcarry
