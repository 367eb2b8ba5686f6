#!/usr/bin/env bash
# Prepares what a run on a network-less GPU node needs, inside the checkout (ignored by git):
#   .gl/        Debian's Vulkan loader and GL vendor-neutral dispatch libraries (the NVIDIA Vulkan ICD
#               is libGLX_nvidia.so.0, which needs libglvnd), plus vulkaninfo for diagnosis;
#   .devcarry/  the Deno binary (xz-compressed, ~31 MB) and `deno bundle`d entry points, so that no
#               node_modules has to travel; and model_config.jsonl, lmpipe's config and parameter count of
#               every model x preset the run measures (bench/gpu/model_config.ts, ~30 s here), which
#               bench/torch_reference.py builds its PyTorch models from.
# Usage: bash bench/gpu/prepare.sh [entry.ts ...]
#   (default: what bench/gpu/run_all.sh runs)
set -euo pipefail
cd "$(dirname "$0")/../.."
exclude="$(git rev-parse --git-path info/exclude)" # .git may be a file (a worktree)
mkdir -p "$(dirname "$exclude")"
grep -qx '/.gl/' "$exclude" 2>/dev/null || echo /.gl/ >> "$exclude"
grep -qx '/.devcarry/' "$exclude" 2>/dev/null || echo /.devcarry/ >> "$exclude"
mkdir -p .gl .devcarry /tmp/amd64/partial
o='-oAPT::Architecture=amd64 -oAPT::Architectures=amd64 -oDir::State::Lists=/tmp/amd64'
if ! ls .gl/libvulkan1_*.deb >/dev/null 2>&1; then
  apt-get $o update >/dev/null
  (cd .gl && apt-get $o download libvulkan1 libegl1 libglvnd0 libopengl0 libgl1 libglx0 libgles2 vulkan-tools \
    libx11-6 libxcb1 libxau6 libxdmcp6 libwayland-client0 libbsd0 libmd0 libxext6 libffi8)
fi
deno_bin="$(command -v deno || npx -y deno@2.9.6 eval 'console.log(Deno.execPath())')"
[ -s .devcarry/deno.xz ] || xz -T2 -6 -c "$deno_bin" > .devcarry/deno.xz
entries=("$@")
[ ${#entries[@]} -gt 0 ] || entries=(bench/gpu/gemm.ts bench/gpu/train_step.ts bench/webgpu_audit.ts bench/webgpu_host.ts bench/webgpu_replay.ts)
for e in "${entries[@]}"; do
  name="$(basename "${e%.ts}")"
  "$deno_bin" bundle --platform=deno -o ".devcarry/$name.js" "$e"
done
"$deno_bin" run -A bench/gpu/model_config.ts --presets tiny,small,study > .devcarry/model_config.jsonl.tmp
mv .devcarry/model_config.jsonl.tmp .devcarry/model_config.jsonl
du -sh .gl .devcarry
echo "carried with the tracked files: $(( ($(du -sb .gl .devcarry | awk '{s += $1} END {print s}') + $(git ls-files -z | xargs -0 du -cb | tail -1 | cut -f1)) / 1048576 )) MiB (limit 64)"
