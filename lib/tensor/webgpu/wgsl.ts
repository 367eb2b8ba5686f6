// WGSL pieces shared by lmpipe's webgpu kernels (webgpu/kernels.ts, ops/<op>/webgpu.ts,
// ops/causal_softmax/webgpu.ts): float tests on the bits (no shader compiler may assume NaN or infinity away), a
// NaN-propagating maximum, the entry point of a one-workgroup-per-row kernel, and the halving tree over
// a workgroup's partial values that TF.js's own reductions use (so that fused kernels can reproduce the
// op chains' sums bit for bit).

/**
 * roundToHalf(x): x rounded to the nearest binary16 value (ties to even) as an f32, on its bits: 65520
 * and above become infinity, below 2^-14 the fixed spacing 2^-24 of subnormals (so tiny negatives become
 * -0), NaN stays NaN. The rule of lib/precision.ts toHalf, bit for bit.
 */
export const WGSL_ROUND_TO_HALF = `
fn roundToHalf(x: f32) -> f32 {
  let bits = bitcast<u32>(x);
  let sign = bits & 0x80000000u;
  let mag = bits & 0x7fffffffu;
  if (mag > 0x7f800000u) { return x; }                                  // NaN
  if (mag >= 0x477ff000u) { return bitcast<f32>(sign | 0x7f800000u); } // >= 65520: inf
  if (mag >= 0x38800000u) {                                             // >= 2^-14: normal binary16
    let odd = (mag >> 13u) & 1u;
    let r = (mag + 0xfffu + odd) & 0xffffe000u;
    return bitcast<f32>(sign | r);
  }
  let q = round(bitcast<f32>(mag) * 16777216.0) * 5.9604644775390625e-8;
  return bitcast<f32>(sign | bitcast<u32>(q));
}`;

/**
 * roundToBf16(x): x rounded to the nearest bfloat16 value (ties to even) as an f32, on its bits: add half
 * a unit of the 16 dropped bits (minus one unless the kept part is odd) and clear them; infinity and NaN
 * stay. The rule of lib/precision.ts toBf16, bit for bit.
 */
export const WGSL_ROUND_TO_BF16 = `
fn roundToBf16(x: f32) -> f32 {
  let bits = bitcast<u32>(x);
  if ((bits & 0x7f800000u) == 0x7f800000u) { return x; }              // inf, NaN
  return bitcast<f32>((bits + 0x7fffu + ((bits >> 16u) & 1u)) & 0xffff0000u);
}`;

/** isNaN, isPosInf, isNegInf on a f32's bits. */
export const WGSL_FLOAT_TESTS = `
fn isNaN(v: f32) -> bool { return (bitcast<u32>(v) & 0x7fffffffu) > 0x7f800000u; }
fn isPosInf(v: f32) -> bool { return bitcast<u32>(v) == 0x7f800000u; }
fn isNegInf(v: f32) -> bool { return bitcast<u32>(v) == 0xff800000u; }`;

/** maxNaN(a, b): the larger, NaN when either is NaN (needs WGSL_FLOAT_TESTS and a `u.nanValue` uniform). */
export const WGSL_MAX_NAN = `
fn maxNaN(a: f32, b: f32) -> f32 {
  if (isNaN(a) || isNaN(b)) { return u.nanValue; }
  return select(a, b, b > a);
}`;

/**
 * Reduces `partial[0..min(cols, w))` into partial[0] with `combine`, halving the live count each round
 * (the upper half folded onto the lower), as TF.js's reductions do. Expects `partial` (workgroup
 * array of w), `lid`, `cols` and a declared `var live: u32` in scope; starts with a barrier.
 */
export function wgslTreeReduce(combine: (a: string, b: string) => string, w: number): string {
  return `
  workgroupBarrier();
  live = min(cols, ${w}u);
  loop {
    if (live <= 1u) { break; }
    let upper = (live + 1u) / 2u;
    if (lid < live / 2u) { partial[lid] = ${combine("partial[lid]", "partial[lid + upper]")}; }
    live = upper;
    workgroupBarrier();
  }`;
}

/**
 * The opening of a kernel that gives each row of a [rows, cols] tensor one workgroup of w threads
 * (row numbers over a 1-D or 2-D grid, see webgpu/kernels.ts workgroupGrid): defines `row`, `cols`,
 * `base` (the row's first index) and `lid`, and returns from workgroups past the last row. Needs
 * `rows` and `cols` uniforms in `u`; the shader goes on with the body and the closing brace.
 */
export function wgslRowEntry(w: number): string {
  return `@compute @workgroup_size(${w})
fn _start(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
          @builtin(local_invocation_index) lid: u32) {
  let row = wid.y * nwg.x + wid.x;
  if (row >= u32(u.rows)) { return; } // the same for the whole workgroup
  let cols = u32(u.cols);
  let base = row * cols;`;
}
