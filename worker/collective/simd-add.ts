/**
 * The ring's reduction (target += incoming, float32) in WebAssembly SIMD: 4 lanes per instruction,
 * 16 floats per loop turn. The plain JavaScript loop cost 1.2–2.5 ns a float on this machine (each
 * element converted to a double and back), the SIMD loop 0.08 ns, and copying a segment into the
 * module's memory and back about 0.1 ns: 5–7× less per reduced float in all (measured 2026-12-01,
 * 128K-float segments). The module is 100-odd bytes, encoded below, so no toolchain is needed.
 *
 * Each adder owns its memory: [0, S) a copy of the target segment, [S, 2S) a copy of an incoming
 * payload that did not arrive in the module's memory, then slots the ring posts so that the kernel
 * writes reduce payloads straight into memory the SIMD loop reads. Growing a WebAssembly memory
 * detaches every view of it, so it grows only in `reserve`, which a ring calls before it posts.
 */

const leb = (n: number): number[] => {
  const out: number[] = [];
  let rest = n >>> 0;
  do {
    let byte = rest & 0x7f;
    rest >>>= 7;
    if (rest !== 0) byte |= 0x80;
    out.push(byte);
  } while (rest !== 0);
  return out;
};
const section = (id: number, bytes: number[]) => [id, ...leb(bytes.length), ...bytes];
const name = (s: string) => [s.length, ...[...s].map((c) => c.charCodeAt(0))];
const GET = 0x20;
const SET = 0x21;
const TEE = 0x22;
/** v128.load / v128.store with 4-byte alignment and `offset`. */
const load = (local: number, offset: number) => [GET, local, 0xfd, 0x00, 0x02, ...leb(offset)];
const store = (offset: number) => [0xfd, 0x0b, 0x02, ...leb(offset)];
const F32X4_ADD = [0xfd, 0xe4, 0x01];
/** i32.const 64 (signed LEB128: 64 needs two bytes). */
const CONST_64 = [0x41, 0xc0, 0x00];

/** add(dst, src, bytes): dst[i] += src[i] over `bytes` (a multiple of 64) from byte offsets dst, src. */
function moduleBytes(): Uint8Array {
  const turn: number[] = [];
  for (let k = 0; k < 4; k++)
    turn.push(GET, 0, ...load(0, 16 * k), ...load(1, 16 * k), ...F32X4_ADD, ...store(16 * k));
  const body = [
    ...[1, 1, 0x7f], // one i32 local: the end
    ...[GET, 0, GET, 2, 0x6a, SET, 3],
    ...[0x02, 0x40, GET, 2, 0x45, 0x0d, 0], // block; nothing to do → out
    ...[0x03, 0x40, ...turn],
    ...[GET, 1, ...CONST_64, 0x6a, SET, 1],
    ...[GET, 0, ...CONST_64, 0x6a, TEE, 0, GET, 3, 0x49, 0x0d, 0], // dst += 64; dst < end → again
    ...[0x0b, 0x0b, 0x0b],
  ];
  return new Uint8Array([
    ...[0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00],
    ...section(1, [1, 0x60, 3, 0x7f, 0x7f, 0x7f, 0]),
    ...section(2, [1, ...name('env'), ...name('mem'), 0x02, 0x00, 0x01]),
    ...section(3, [1, 0]),
    ...section(7, [1, ...name('add'), 0x00, 0x00]),
    ...section(10, [1, ...leb(body.length), ...body]),
  ]);
}

/** What this file uses of the WebAssembly global (the project's lib has no DOM types). */
interface WasmMemory {
  readonly buffer: ArrayBuffer;
  grow(pages: number): number;
}
interface Wasm {
  validate(bytes: Uint8Array): boolean;
  Module: new (bytes: Uint8Array) => object;
  Memory: new (descriptor: { initial: number }) => WasmMemory;
  Instance: new (module: object, imports: object) => { exports: Record<string, unknown> };
}
const WebAssembly = (globalThis as unknown as { WebAssembly: Wasm }).WebAssembly;

const PAGE = 64 * 1024;
const BYTES = moduleBytes();
const compiled: object | undefined = WebAssembly.validate(BYTES) ? new WebAssembly.Module(BYTES) : undefined;

/** target += incoming in JavaScript: the fallback, and the tail of fewer than 16 floats. */
export function addIntoJs(target: Float32Array, incoming: Float32Array, from = 0): void {
  const n = target.length;
  for (let i = from; i < n; i++) target[i] = (target[i] as number) + (incoming[i] as number);
}

const align = (bytes: number) => Math.ceil(bytes / 64) * 64;

export class SimdAdder {
  private readonly memory: WasmMemory;
  private readonly add: (dst: number, src: number, bytes: number) => void;
  /** Bytes of each scratch area (the target's copy, the unposted payload's copy). */
  private scratchBytes = 0;
  private slotBytes = 0;

  private constructor(module: object) {
    this.memory = new WebAssembly.Memory({ initial: 1 });
    const instance = new WebAssembly.Instance(module, { env: { mem: this.memory } });
    this.add = instance.exports['add'] as (dst: number, src: number, bytes: number) => void;
  }

  /** An adder, or undefined where WebAssembly SIMD is not available (the JavaScript loop then). */
  static create(): SimdAdder | undefined {
    return compiled === undefined ? undefined : new SimdAdder(compiled);
  }

  /**
   * Room for segments of up to `segmentElements` floats and `slots` bytes of posted payloads.
   * Detaches the views of earlier slots when the memory grows: call it before posting any.
   */
  reserve(segmentElements: number, slots: number): boolean {
    const scratch = Math.max(this.scratchBytes, align(segmentElements * 4));
    const slotBytes = Math.max(this.slotBytes, slots);
    const need = 2 * scratch + slotBytes;
    const have = this.memory.buffer.byteLength;
    try {
      if (need > have) this.memory.grow(Math.ceil((need - have) / PAGE));
    } catch {
      // Beyond what a 32-bit memory holds (or the host grants): the caller goes without slots.
      return false;
    }
    this.scratchBytes = scratch;
    this.slotBytes = slotBytes;
    return true;
  }

  /** `bytes` of the slot area from `offset` (a multiple of 64 keeps the loads aligned). */
  slot(offset: number, bytes: number): Uint8Array {
    if (offset + bytes > this.slotBytes)
      throw new RangeError(`slot ${offset}+${bytes} beyond ${this.slotBytes}`);
    return new Uint8Array(this.memory.buffer, 2 * this.scratchBytes + offset, bytes);
  }

  /** Whether `view` lies in this adder's memory (a posted slot the kernel filled). */
  owns(view: ArrayBufferView): boolean {
    return view.buffer === this.memory.buffer;
  }

  /** target += incoming, element-wise, with the same float32 rounding as the JavaScript loop. */
  addInto(target: Float32Array, incoming: Float32Array): void {
    const n = target.length;
    const main = n - (n % 16);
    const owned = this.owns(incoming);
    if (main * 4 > this.scratchBytes) {
      // Growing would detach `incoming` itself; rings reserve before they post, so this is a misuse.
      if (owned || !this.reserve(main, 0)) {
        addIntoJs(target, incoming);
        return;
      }
    }
    const heap = this.memory.buffer;
    let src = incoming.byteOffset;
    if (!owned || src % 4 !== 0) {
      src = this.scratchBytes;
      new Float32Array(heap, src, main).set(incoming.subarray(0, main));
    }
    const copy = new Float32Array(heap, 0, main);
    copy.set(target.subarray(0, main));
    this.add(0, src, main * 4);
    target.set(copy);
    addIntoJs(target, incoming, main);
  }
}

/** Rounds `bytes` up so the next slot starts 64-byte aligned. */
export const slotSize = align;
