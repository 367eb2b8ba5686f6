// lib/dist/gpu.ts: each rank on webgpu names the GPU it got, and the node's first rank warns when several
// ranks share a node and nothing selects a different GPU for each (docs/distributed.md, "GPUs: one rank
// per GPU"). Which GPU a rank really gets is up to the Vulkan loader and drivers; that needs a machine with
// several GPUs and is not tested here. Run in child processes, since the report goes to stderr.
import assert from "node:assert/strict";
import { GPU_SELECT_VARS } from "../lib/dist/gpu.ts";

const gpuModule = new URL("../lib/dist/gpu.ts", import.meta.url).href;

/** stderr of reportRankDevice for a rank of a node with `localSize` ranks, in environment `env`. */
async function report(
  rank: number,
  localRank: number,
  localSize: number,
  backend: string,
  env: Record<string, string> = {},
): Promise<string> {
  const code = `
    import { reportRankDevice } from ${JSON.stringify(gpuModule)};
    reportRankDevice(
      { mpi: { rank: ${rank} }, launch: { localRank: ${localRank}, localSize: ${localSize} } } as never,
      { name: ${JSON.stringify(backend)}, device: "Test GPU 0000:41:00.0" },
    );`;
  const clean = Object.fromEntries(GPU_SELECT_VARS.map((v) => [v, ""])); // none set unless `env` sets it
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["eval", "--ext=ts", code],
    env: { ...clean, ...env, NO_COLOR: "1" },
    stdout: "piped",
    stderr: "piped",
  }).output();
  assert.equal(out.code, 0, new TextDecoder().decode(out.stderr));
  return new TextDecoder().decode(out.stderr);
}

Deno.test("dist gpu: each webgpu rank names its GPU; the node's first rank warns when nothing tells them apart", async () => {
  const first = await report(0, 0, 4, "webgpu");
  assert.match(first, /dist: rank 0 trains on GPU Test GPU 0000:41:00\.0/);
  assert.match(first, /4 ranks on this node use webgpu, and nothing selects a different GPU/);
  // the other ranks of the node name their GPU without repeating the warning
  const second = await report(5, 1, 4, "webgpu");
  assert.match(second, /dist: rank 5 trains on GPU/);
  assert.doesNotMatch(second, /warning/);
  // a selection variable, or one rank per node: no warning
  for (
    const env of [{ MESA_VK_DEVICE_SELECT: "10de:2330" }, { DRI_PRIME: "pci-0000_41_00_0" }] as Record<
      string,
      string
    >[]
  ) {
    assert.doesNotMatch(await report(0, 0, 4, "webgpu", env), /warning/, JSON.stringify(env));
  }
  assert.doesNotMatch(await report(0, 0, 1, "webgpu"), /warning/);
  // CPU ranks say nothing about GPUs
  assert.equal((await report(0, 0, 4, "wasm")).trim(), "");
});
