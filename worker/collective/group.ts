/**
 * A ring of workers for one generation: all-reduce (reduce-scatter then all-gather, segmented and
 * pipelined), broadcast and barrier over the TCP links of `transport.ts`. A broken link, a timeout or
 * an abort (a new generation) fails the collective with a typed error and leaves the caller's buffer
 * to be thrown away: gradients are applied only after a complete all-reduce.
 */
import { encodeHalf, fromBf16Bits, fromHalfBits, roundToBf16, roundToHalf, toBf16Bits } from './fp16.ts';
import { chunkRanges, type Range, ringSchedule, segmentRanges } from './ring.ts';
import {
  CollectiveAbortedError,
  type CollectiveServer,
  dial,
  FRAME_DATA,
  type FramedLink,
  ProtocolError,
} from './transport.ts';

export interface RingMember {
  readonly address: string;
}

export interface RingOptions {
  readonly job: string;
  readonly generation: number;
  readonly rank: number;
  readonly members: readonly RingMember[];
  readonly server: CollectiveServer;
  /** How long to wait for a neighbour's connection or data before giving up. */
  readonly timeoutMs?: number;
  /** Elements per segment: the unit of pipelining. */
  readonly segmentElements?: number;
  readonly signal?: AbortSignal;
}

export interface AllReduceOptions {
  /** Half precision on the wire (sums still in fp32). */
  readonly fp16?: boolean;
  /** bfloat16 on the wire instead (fp32's range, 8 bits of mantissa); sums still in fp32. */
  readonly bf16?: boolean;
}

type Wire = 'fp32' | 'fp16' | 'bf16';

function encode16(source: Float32Array, start: number, end: number, wire: Wire): Uint8Array {
  if (wire === 'fp16') return new Uint8Array(encodeHalf(source, start, end).buffer);
  const out = new Uint16Array(end - start);
  for (let i = start; i < end; i++) out[i - start] = toBf16Bits(source[i] as number);
  return new Uint8Array(out.buffer);
}

const DEFAULT_SEGMENT = 128 * 1024;

/**
 * target += incoming, element-wise. A function of its own: inside the long async allReduce the same
 * loop ran about half as fast (measured; it is optimised there only by on-stack replacement).
 */
function addInto(target: Float32Array, incoming: Float32Array): void {
  const n = target.length;
  for (let i = 0; i < n; i++) target[i] = (target[i] as number) + (incoming[i] as number);
}

export class RingGroup implements AsyncDisposable {
  private seq = 0;
  private closed = false;

  private constructor(
    readonly generation: number,
    readonly rank: number,
    readonly size: number,
    private readonly right: FramedLink | undefined,
    private readonly left: FramedLink | undefined,
    private readonly timeoutMs: number,
    private readonly segmentElements: number,
    private readonly signal: AbortSignal | undefined,
  ) {
    signal?.addEventListener('abort', () => this.abort(), { once: true });
  }

  static async connect(options: RingOptions): Promise<RingGroup> {
    const { rank, members, generation, server } = options;
    const size = members.length;
    const timeoutMs = options.timeoutMs ?? 30_000;
    const segment = options.segmentElements ?? DEFAULT_SEGMENT;
    if (rank < 0 || rank >= size) throw new RangeError(`rank ${rank} outside a world of ${size}`);
    server.retire(generation);
    if (size === 1)
      return new RingGroup(generation, rank, 1, undefined, undefined, timeoutMs, segment, options.signal);
    const rightRank = (rank + 1) % size;
    const leftRank = (rank - 1 + size) % size;
    const leftAddress = (members[leftRank] as RingMember).address;
    // Data flows to the right; each rank dials the neighbour it receives from (see `dial`).
    const [right, left] = await Promise.all([
      server.inbound(generation, rightRank, rank, timeoutMs, options.signal),
      dial(
        leftAddress,
        { job: options.job, generation, fromRank: rank, toRank: leftRank, size },
        timeoutMs,
        options.signal,
      ),
    ]);
    return new RingGroup(generation, rank, size, right, left, timeoutMs, segment, options.signal);
  }

  private check(): void {
    if (this.closed || this.signal?.aborted)
      throw new CollectiveAbortedError(`generation ${this.generation} was aborted`);
  }

  private async receive(expectedSeq: number): Promise<Buffer> {
    const frame = await (this.left as FramedLink).receive(this.timeoutMs);
    if (
      frame.kind !== FRAME_DATA ||
      frame.generation !== this.generation ||
      frame.seq !== expectedSeq >>> 0
    ) {
      throw new ProtocolError(
        `expected data ${expectedSeq} of generation ${this.generation}, got kind ${frame.kind} seq ${frame.seq} generation ${frame.generation}`,
      );
    }
    return frame.payload;
  }

  private send(seq: number, payload: Uint8Array): Promise<void> {
    const sent = (this.right as FramedLink).send(FRAME_DATA, this.generation, seq, payload);
    // A send that fails after the collective already failed must not surface as an unhandled rejection.
    sent.catch(() => undefined);
    return sent;
  }

  private encode(buffer: Float32Array, range: Range, wire: Wire): Uint8Array {
    if (wire !== 'fp32') return encode16(buffer, range.start, range.end, wire);
    // No copy. A region this rank sent is overwritten later in the same all-reduce only by the chunk's
    // final sum, which cannot arrive before the right neighbour has read the bytes sent (the sum
    // depends on them), so the socket has handed them to the kernel by then; and allReduce resolves
    // only after every send has, so the caller may reuse the buffer at once.
    return new Uint8Array(buffer.buffer, buffer.byteOffset + range.start * 4, (range.end - range.start) * 4);
  }

  /** Sums `buffer` element-wise over the ring, in place; every rank ends with identical bits. */
  async allReduce(buffer: Float32Array, options: AllReduceOptions = {}): Promise<Float32Array> {
    this.check();
    if (this.size === 1) return buffer;
    const wire: Wire = options.bf16 ? 'bf16' : options.fp16 ? 'fp16' : 'fp32';
    const fp16 = wire !== 'fp32';
    const decode = wire === 'bf16' ? fromBf16Bits : fromHalfBits;
    const chunks = chunkRanges(buffer.length, this.size);
    const segments = chunks.map((c) => segmentRanges(c, this.segmentElements));
    const steps = ringSchedule(this.rank, this.size);
    const base = this.seq;
    this.seq += steps.length * Math.max(...segments.map((s) => s.length), 0) + 1;
    try {
      const first = steps[0];
      if (first === undefined) return buffer;
      const sends: Promise<void>[] = [];
      let seq = base;
      for (const seg of segments[first.sendChunk] ?? [])
        sends.push(this.send(seq++, this.encode(buffer, seg, wire)));
      let receiveSeq = base;
      for (let s = 0; s < steps.length; s++) {
        const step = steps[s] as (typeof steps)[number];
        const next = steps[s + 1];
        for (const seg of segments[step.receiveChunk] ?? []) {
          const payload = await this.receive(receiveSeq++);
          this.check();
          const count = seg.end - seg.start;
          const expectedBytes = count * (fp16 ? 2 : 4);
          if (payload.byteLength !== expectedBytes) {
            throw new ProtocolError(`segment of ${payload.byteLength} bytes, expected ${expectedBytes}`);
          }
          if (fp16) {
            for (let i = 0; i < count; i++) {
              const value = decode(payload.readUInt16LE(i * 2));
              buffer[seg.start + i] =
                step.mode === 'reduce' ? (buffer[seg.start + i] as number) + value : value;
            }
          } else {
            // A view when the payload is aligned (the link gives payloads buffers of their own).
            let incoming: Float32Array;
            if (payload.byteOffset % 4 === 0)
              incoming = new Float32Array(payload.buffer, payload.byteOffset, count);
            else {
              incoming = new Float32Array(count);
              new Uint8Array(incoming.buffer).set(payload);
            }
            if (step.mode === 'reduce') addInto(buffer.subarray(seg.start, seg.end), incoming);
            else buffer.set(incoming, seg.start);
          }
          (this.left as FramedLink).release(payload);
          // The owner of a fully reduced chunk rounds it like everyone else will, so bits agree.
          if (fp16 && next !== undefined && next.mode === 'copy' && step.mode === 'reduce')
            (wire === 'bf16' ? roundToBf16 : roundToHalf)(buffer, seg.start, seg.end);
          if (next !== undefined) sends.push(this.send(seq++, this.encode(buffer, seg, wire)));
        }
      }
      await Promise.all(sends);
      return buffer;
    } catch (error) {
      this.abort();
      throw error;
    }
  }

  /** Sends `root`'s bytes to every rank (pipelined along the ring); returns them on every rank. */
  async broadcast(bytes: Uint8Array | undefined, root: number): Promise<Uint8Array> {
    this.check();
    if (this.size === 1) {
      if (bytes === undefined) throw new RangeError('the root of a broadcast must provide the bytes');
      return bytes;
    }
    const forward = (this.rank + 1) % this.size !== root;
    const base = this.seq;
    const segmentBytes = this.segmentElements * 4;
    try {
      if (this.rank === root) {
        if (bytes === undefined) throw new RangeError('the root of a broadcast must provide the bytes');
        const count = Math.ceil(bytes.byteLength / segmentBytes);
        this.seq += count + 2;
        const header = Buffer.alloc(8);
        header.writeDoubleBE(bytes.byteLength, 0);
        const sends = [this.send(base, header)];
        for (let i = 0; i < count; i++)
          sends.push(
            this.send(
              base + 1 + i,
              bytes.subarray(i * segmentBytes, Math.min(bytes.byteLength, (i + 1) * segmentBytes)),
            ),
          );
        await Promise.all(sends);
        return bytes;
      }
      const header = await this.receive(base);
      const total = header.readDoubleBE(0);
      const count = Math.ceil(total / segmentBytes);
      this.seq += count + 2;
      const sends: Promise<void>[] = [];
      if (forward) sends.push(this.send(base, header));
      const out = new Uint8Array(total);
      let offset = 0;
      for (let i = 0; i < count; i++) {
        const part = await this.receive(base + 1 + i);
        this.check();
        out.set(part, offset);
        offset += part.byteLength;
        if (forward) sends.push(this.send(base + 1 + i, part));
      }
      if (offset !== total) throw new ProtocolError(`broadcast delivered ${offset} of ${total} bytes`);
      await Promise.all(sends);
      return out;
    } catch (error) {
      this.abort();
      throw error;
    }
  }

  /** Returns once every rank has called it. */
  async barrier(): Promise<void> {
    await this.allReduce(new Float32Array(1));
  }

  private abort(): void {
    if (this.closed) return;
    this.closed = true;
    this.right?.close();
    this.left?.close();
  }

  async [Symbol.asyncDispose](): Promise<void> {
    this.abort();
  }
}
