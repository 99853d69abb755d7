/**
 * The ring all-reduce schedule (reduce-scatter, then all-gather) as pure data. The buffer is cut into
 * `size` chunks; at step s rank r sends chunk (r − s) mod n to its right neighbour and receives chunk
 * (r − s − 1) mod n from its left one: it adds its own values into it during the n − 1 reduce-scatter
 * steps and copies it during the n − 1 all-gather steps. What a rank sends at step s + 1 is exactly
 * what it received at step s, so segments can be forwarded as soon as they arrive (pipelining).
 */

export interface Range {
  readonly start: number;
  readonly end: number;
}

export interface RingStep {
  readonly step: number;
  readonly sendChunk: number;
  readonly receiveChunk: number;
  /** Reduce-scatter adds into the received chunk; all-gather overwrites with it. */
  readonly mode: 'reduce' | 'copy';
}

const mod = (a: number, n: number) => ((a % n) + n) % n;

/** Chunk boundaries: as equal as possible, the first `length % size` chunks one element longer. */
export function chunkRanges(length: number, size: number): Range[] {
  if (!Number.isInteger(size) || size < 1)
    throw new RangeError(`ring size must be a positive integer, got ${size}`);
  const base = Math.floor(length / size);
  const extra = length % size;
  const out: Range[] = [];
  let start = 0;
  for (let i = 0; i < size; i++) {
    const end = start + base + (i < extra ? 1 : 0);
    out.push({ start, end });
    start = end;
  }
  return out;
}

/** Splits a range into segments of at most `segment` elements (the unit of pipelining). */
export function segmentRanges(range: Range, segment: number): Range[] {
  if (segment < 1) throw new RangeError(`segment size must be positive, got ${segment}`);
  const out: Range[] = [];
  for (let start = range.start; start < range.end; start += segment)
    out.push({ start, end: Math.min(range.end, start + segment) });
  return out;
}

export function ringSchedule(rank: number, size: number): RingStep[] {
  if (rank < 0 || rank >= size) throw new RangeError(`rank ${rank} outside a ring of ${size}`);
  const steps: RingStep[] = [];
  for (let s = 0; s < 2 * (size - 1); s++) {
    steps.push({
      step: s,
      sendChunk: mod(rank - s, size),
      receiveChunk: mod(rank - s - 1, size),
      mode: s < size - 1 ? 'reduce' : 'copy',
    });
  }
  return steps;
}

/** The bound of a ring all-reduce: every rank moves 2(n − 1)/n of the buffer over its link. */
export function ringBytesPerRank(bytes: number, size: number): number {
  return size <= 1 ? 0 : (2 * (size - 1) * bytes) / size;
}

/**
 * Simulates the schedule on plain arrays (one per rank), for tests of the schedule itself:
 * after it, every rank holds the element-wise sum.
 */
export function simulateRing(buffers: Float64Array[]): Float64Array[] {
  const size = buffers.length;
  const state = buffers.map((b) => Float64Array.from(b));
  const ranges = chunkRanges(state[0]?.length ?? 0, size);
  const schedules = state.map((_, r) => ringSchedule(r, size));
  for (let s = 0; s < 2 * (size - 1); s++) {
    // All sends of a step happen before any receive is applied, as on the wire.
    const sent = state.map((buffer, r) => {
      const step = schedules[r]?.[s];
      const range = ranges[step?.sendChunk ?? 0] as Range;
      return buffer.slice(range.start, range.end);
    });
    state.forEach((buffer, r) => {
      const step = schedules[r]?.[s] as RingStep;
      const incoming = sent[mod(r - 1, size)] as Float64Array;
      const range = ranges[step.receiveChunk] as Range;
      for (let i = 0; i < incoming.length; i++) {
        const at = range.start + i;
        buffer[at] = step.mode === 'reduce' ? (buffer[at] ?? 0) + (incoming[i] ?? 0) : (incoming[i] ?? 0);
      }
    });
  }
  return state;
}
