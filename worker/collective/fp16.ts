/**
 * 16-bit floats for gradients on the wire: IEEE 754 half precision (about 1e-3 relative rounding,
 * which SGD tolerates, as mixed-precision training shows) and bfloat16 (fp32's range, 8 bits of
 * mantissa: no overflow, coarser rounding).
 */

const f32 = new Float32Array(1);
const u32 = new Uint32Array(f32.buffer);

/** Rounds to nearest even; overflow becomes ±Infinity, tiny values become subnormals or zero. */
export function toHalfBits(value: number): number {
  f32[0] = value;
  const x = u32[0] as number;
  const sign = (x >>> 16) & 0x8000;
  const exponent = (x >>> 23) & 0xff;
  let mantissa = x & 0x7fffff;
  if (exponent === 0xff) return sign | 0x7c00 | (mantissa !== 0 ? 0x200 : 0);
  let e = exponent - 127 + 15;
  if (e >= 0x1f) return sign | 0x7c00;
  if (e <= 0) {
    if (e < -10) return sign;
    mantissa |= 0x800000;
    const shift = 14 - e;
    const half = 1 << (shift - 1);
    let rounded = mantissa >>> shift;
    const rest = mantissa & ((1 << shift) - 1);
    if (rest > half || (rest === half && (rounded & 1) === 1)) rounded++;
    return sign | rounded;
  }
  let rounded = mantissa >>> 13;
  const rest = mantissa & 0x1fff;
  if (rest > 0x1000 || (rest === 0x1000 && (rounded & 1) === 1)) {
    rounded++;
    if (rounded === 0x400) {
      rounded = 0;
      e++;
      if (e >= 0x1f) return sign | 0x7c00;
    }
  }
  return sign | (e << 10) | rounded;
}

export function fromHalfBits(bits: number): number {
  const sign = bits & 0x8000 ? -1 : 1;
  const exponent = (bits >>> 10) & 0x1f;
  const mantissa = bits & 0x3ff;
  if (exponent === 0) return sign * mantissa * 2 ** -24;
  if (exponent === 0x1f) return mantissa === 0 ? sign * Number.POSITIVE_INFINITY : Number.NaN;
  return sign * (1 + mantissa / 1024) * 2 ** (exponent - 15);
}

export function encodeHalf(source: Float32Array, start: number, end: number): Uint16Array {
  const out = new Uint16Array(end - start);
  for (let i = start; i < end; i++) out[i - start] = toHalfBits(source[i] as number);
  return out;
}

/** Rounds values in place to what a half-precision round trip gives, so every rank holds the same bits. */
export function roundToHalf(buffer: Float32Array, start: number, end: number): void {
  for (let i = start; i < end; i++) buffer[i] = fromHalfBits(toHalfBits(buffer[i] as number));
}

/** bfloat16: the upper 16 bits of a float32, rounded to nearest even (NaN stays NaN). */
export function toBf16Bits(value: number): number {
  f32[0] = value;
  const x = u32[0] as number;
  if ((x & 0x7f800000) === 0x7f800000 && (x & 0x7fffff) !== 0) return ((x >>> 16) | 0x40) & 0xffff;
  return ((x + 0x7fff + ((x >>> 16) & 1)) >>> 16) & 0xffff;
}

export function fromBf16Bits(bits: number): number {
  u32[0] = (bits & 0xffff) << 16;
  return f32[0] as number;
}

/** Rounds values in place to what a bf16 round trip gives. */
export function roundToBf16(buffer: Float32Array, start = 0, end = buffer.length): void {
  for (let i = start; i < end; i++) buffer[i] = fromBf16Bits(toBf16Bits(buffer[i] as number));
}
