// The off switches of lmpipe's own kernels and engine features (LMPIPE_WASM_FUSED, LMPIPE_WEBGPU_REPLAY, ...)
// all read alike: on unless the variable is "0", and on when the process may not read the environment.
// One function, so that every switch means the same thing (docs/kernels.md lists them); kernel_choice.ts
// reads its own switches through it too.

/** Whether the switch `name` is on: unset or any value but "0" (and without env permission: on). */
export function switchOn(name: string): boolean {
  try {
    return Deno.env.get(name) !== "0";
  } catch {
    return true; // no env permission
  }
}
