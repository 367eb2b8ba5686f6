// One rank per GPU. Deno's WebGPU (wgpu over Vulkan) offers no way to pick an adapter by index, so a rank
// sees the GPU that the Vulkan loader lists first among the ones it is allowed to see: the choice has to
// be made outside lmpipe, before the rank starts (docs/distributed.md: Slurm's per-task GPU binding, or
// a device-selection variable per local rank). This module says which GPU each rank got, and warns when
// several ranks of a node run on webgpu with nothing that would give them different GPUs.
import { warn } from "../log.ts";
import type { DistRun } from "./mod.ts";

/** Environment variables that narrow or order the GPUs a Vulkan (WebGPU) process sees. */
export const GPU_SELECT_VARS = [
  "MESA_VK_DEVICE_SELECT", // Mesa's device-select layer: this vendorID:deviceID first
  "DRI_PRIME", // the same layer: pci-DDDD_BB_SS_F (a PCI address) first
  "VK_LOADER_DRIVERS_SELECT", // Vulkan loader 1.3.234+: only drivers whose manifest matches
  "VK_DRIVER_FILES", // only these drivers' manifests (older loaders: VK_ICD_FILENAMES)
  "VK_ICD_FILENAMES",
];

/** Logs this rank's GPU and warns when the node's ranks probably share one. */
export function reportRankDevice(dist: DistRun, backend: { name: string; device: string }): void {
  if (backend.name !== "webgpu") return;
  console.error(`dist: rank ${dist.mpi.rank} trains on GPU ${backend.device}`);
  const local = dist.launch?.localSize ?? null;
  const set = GPU_SELECT_VARS.filter((v) => {
    try {
      return (Deno.env.get(v) ?? "") !== "";
    } catch {
      return false;
    }
  });
  if (dist.launch?.localRank === 0 && local !== null && local > 1 && set.length === 0) {
    warn(
      `${local} ranks on this node use webgpu, and nothing selects a different GPU for each: they may all ` +
        `train on the first one. Bind one GPU per task (Slurm: --gpus-per-task=1 with device cgroups) or set ` +
        `a per-rank device selection as docs/distributed.md shows.`,
    );
  }
}
