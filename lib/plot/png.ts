// PNG encoding and decoding through fast-png (a maintained, pure-JavaScript codec), so raster pictures
// become files any viewer opens; decoding is here for tests and for checking what was written.
import { decode, encode } from "fast-png";
import type { Raster } from "./raster.ts";

/** Encodes an RGBA raster as an 8-bit RGBA PNG. */
export function encodePng(img: Raster): Uint8Array {
  return encode({ width: img.width, height: img.height, data: img.data, channels: 4, depth: 8 });
}

export interface DecodedImage {
  width: number;
  height: number;
  channels: number;
  depth: number;
  data: Uint8Array | Uint8ClampedArray | Uint16Array;
}

/** Decodes PNG bytes (any colour type fast-png reads). */
export function decodePng(bytes: Uint8Array): DecodedImage {
  const d = decode(bytes);
  return { width: d.width, height: d.height, channels: d.channels, depth: d.depth, data: d.data };
}
