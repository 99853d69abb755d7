/** The ring's SIMD reduction against the JavaScript loop, bit for bit. */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { addIntoJs, SimdAdder, slotSize } from '../../worker/collective/simd-add.ts';
import { uint32Stream } from '../../worker/data/sampler.ts';

function randoms(size: number, seed: number): Float32Array {
  const next = uint32Stream(seed);
  // Wide exponents, so rounding differs between float32 and float64 sums where it can.
  return Float32Array.from({ length: size }, () => (next() / 2 ** 31 - 1) * 2 ** ((next() % 40) - 20));
}

function expected(target: Float32Array, incoming: Float32Array): Float32Array {
  const out = Float32Array.from(target);
  addIntoJs(out, incoming);
  return out;
}

const bits = (a: Float32Array) => Array.from(new Uint32Array(a.buffer, a.byteOffset, a.length));

const adder = SimdAdder.create();

test('WebAssembly SIMD is available on this Node (else every ring falls back to the loop)', () => {
  assert.ok(adder !== undefined);
});

test('sums as the JavaScript loop does, bit for bit, at every length around the 16-float turn', () => {
  const a = adder as SimdAdder;
  for (const n of [0, 1, 15, 16, 17, 63, 64, 65, 1000, 128 * 1024 + 7]) {
    const target = randoms(n, n + 1);
    const incoming = randoms(n, n + 2);
    const want = expected(target, incoming);
    a.addInto(target, incoming);
    assert.equal(bits(target), bits(want), `length ${n}`);
  }
});

test('reads a payload from a posted slot in place, and from unaligned memory via its scratch', () => {
  const a = SimdAdder.create() as SimdAdder;
  const n = 5000;
  a.reserve(n, slotSize(n * 4) * 2);
  const slot = a.slot(slotSize(n * 4), n * 4);
  assert.ok(a.owns(slot));
  const incoming = randoms(n, 7);
  slot.set(new Uint8Array(incoming.buffer));
  const target = randoms(n, 8);
  const want = expected(target, incoming);
  a.addInto(target, new Float32Array(slot.buffer, slot.byteOffset, n));
  assert.equal(bits(target), bits(want));
  // A view at an odd float offset of foreign memory, and a target that is a subarray.
  const wide = randoms(n + 3, 9);
  const view = wide.subarray(3);
  const host = randoms(n + 1, 10);
  const sub = host.subarray(1);
  const want2 = expected(sub, view);
  a.addInto(sub, view);
  assert.equal(bits(sub), bits(want2));
});

test('a slot beyond what was reserved is refused, not written past', () => {
  const a = SimdAdder.create() as SimdAdder;
  a.reserve(16, 64);
  assert.throws(() => a.slot(64, 4), /beyond/);
});

test('room beyond a 32-bit memory is refused (the ring then sums without slots), and the adder still works', () => {
  const a = SimdAdder.create() as SimdAdder;
  assert.is(a.reserve(2 ** 30, 2 ** 32), false);
  const target = randoms(100, 11);
  const incoming = randoms(100, 12);
  const want = expected(target, incoming);
  a.addInto(target, incoming);
  assert.equal(bits(target), bits(want));
});

test.run();
