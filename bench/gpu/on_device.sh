#!/usr/bin/env bash
# Runs on the GPU node (device tool): unpacks the carried Vulkan loader and Deno, points the Vulkan
# loader at NVIDIA's ICD, then runs the given bundled script with Deno.
# Usage there: bash bench/gpu/on_device.sh .devcarry/probe.js [args...]
set -euo pipefail
for f in .gl/*.deb; do dpkg -x "$f" /; done
ldconfig
xz -dc .devcarry/deno.xz > /tmp/deno && chmod +x /tmp/deno
export VK_DRIVER_FILES=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json
exec /tmp/deno run -A "$@"
