// A very small config of each image model (lib/models/pixel.ts), shared by the tests that train or
// differentiate one.
import { PIXEL_PRESETS, type PixelConfig, validatePixelConfig } from "../lib/models/pixel.ts";

/** A very small config of `model` (small vocabulary, short context) for fast tests. */
export function tinyConfig(model: PixelConfig["model"], over: Partial<PixelConfig> = {}): PixelConfig {
  const c: PixelConfig = {
    ...PIXEL_PRESETS[model].tiny,
    vocabSize: 61,
    contextLength: 8,
    nEmbd: 16,
    nHead: 2,
    nWarmup: 1,
    channels: 2,
    imageSize: 4,
    keyDim: 4,
    cnnWidth: 4,
    cnnDepth: 2,
    ...over,
  };
  validatePixelConfig(c);
  return c;
}
