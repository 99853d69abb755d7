/**
 * A ring of workers for one generation: all-reduce (reduce-scatter then all-gather, segmented and
 * pipelined), broadcast and barrier over the TCP links of `transport.ts`. A broken link, a timeout or
 * an abort (a new generation) fails the collective with a typed error and leaves the caller's buffer
 * to be thrown away: gradients are applied only after a complete all-reduce.
 */
import { DropCounter } from '../../operator/api/drops.ts';
import { encodeHalf, fromBf16Bits, fromHalfBits, roundToBf16, roundToHalf, toBf16Bits } from './fp16.ts';
import { type HierarchyOp, hierarchyPays, hierarchySchedule, nodeGroups } from './hierarchy.ts';
import { chunkRanges, type Range, type RingStep, ringSchedule, segmentRanges } from './ring.ts';
import { addIntoJs as addInto, SimdAdder, slotSize } from './simd-add.ts';
import {
  CollectiveAbortedError,
  type CollectiveServer,
  dial,
  FRAME_DATA,
  FramedLink,
  PeerLostError,
  ProtocolError,
} from './transport.ts';

export interface RingMember {
  readonly address: string;
  /** The member's node: with `hierarchical`, adjacent members of a node reduce among themselves first. */
  readonly node?: string | undefined;
}

export interface RingOptions {
  readonly job: string;
  readonly generation: number;
  readonly rank: number;
  readonly members: readonly RingMember[];
  readonly server: CollectiveServer;
  /** The world's link token (its record in the rendezvous): neighbours prove they hold it. */
  readonly token: string;
  /** How long to wait for a neighbour's connection or data before giving up. */
  readonly timeoutMs?: number;
  /** Elements per segment at most: the unit of pipelining. */
  readonly segmentElements?: number;
  /** A chunk is cut into at least this many segments (default 1: segments of `segmentElements`). */
  readonly segmentsPerChunk?: number;
  readonly signal?: AbortSignal;
  /**
   * Called once when the link to or from a neighbour breaks on the neighbour's side (EOF, RST): it
   * died or left this world. A break of the link this rank receives on aborts the ring at once and
   * fails the collective in flight; a break of the link it sends on fails a send still in flight and
   * every later collective, but not the receives this rank still waits for (see `watch`).
   */
  readonly onPeerLost?: (rank: number, error: PeerLostError) => void;
  /**
   * Let the kernel write received bodies in place: into the payload buffer, and for the all-gather
   * straight into the caller's buffer (default true; false is the copying path, for the bench).
   */
  readonly receiveInPlace?: boolean;
  /**
   * fp32 all-reduces go hierarchical (hierarchy.ts: within each node, then among the nodes' leaders)
   * when the members name their nodes, each node's members are adjacent, and some node has more than
   * one (default false: the flat ring).
   */
  readonly hierarchical?: boolean;
  /** How received segments are summed in: WebAssembly SIMD (default) or the JavaScript loop (bench). */
  readonly reducer?: 'simd' | 'js';
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

/**
 * Elements per segment: each frame costs about 0.1 ms of CPU here (wake-ups, promises, a writev), so
 * on 2 cores fewer frames win. 4M floats, 2 / 3 ranks, CPU ms per all-reduce (all ranks; a raw ring of
 * the same bytes 12 / 26): 47 / 73 at 32K, 28 / 50 at 128K, 23 / 44 at 512K, 18 / 40 at 2M (one
 * frame per chunk, no pipelining left); times were within the noise of a machine at load 7–20
 * (2026-12-01). 512K keeps 4 segments per chunk of 4M floats at 2 ranks for the pipeline.
 */
const DEFAULT_SEGMENT = 512 * 1024;
/**
 * How many segments a chunk is cut into at least (down to MIN_SEGMENT elements). More would let a
 * rank forward while it still receives, but 4 per chunk measured slower at 3 ranks on 2 cores
 * (235K floats: 0.66 of a raw ring against 0.96 with one; collective bench, 2026-12-01): each frame
 * costs a wake-up, and here the CPU, not the link, is what the ring waits for.
 */
const SEGMENTS_PER_CHUNK = 1;
const MIN_SEGMENT = 16 * 1024;

export class RingGroup implements AsyncDisposable {
  private seq = 0;
  private closed = false;
  /** The neighbour's side broke a link: what the collective in flight fails with. */
  private broken: PeerLostError | undefined;
  /** The right neighbour closed the link this rank sends on: what the next collective fails with. */
  private rightLost: PeerLostError | undefined;
  /** The reduction in WebAssembly SIMD, its memory this ring's own (undefined: the JavaScript loop). */
  private adder: SimdAdder | undefined;

  private constructor(
    readonly generation: number,
    readonly rank: number,
    readonly size: number,
    private readonly right: FramedLink | undefined,
    private readonly left: FramedLink | undefined,
    private readonly timeoutMs: number,
    private readonly segmentElements: number,
    private readonly signal: AbortSignal | undefined,
    private readonly drops: DropCounter = new DropCounter(),
    private readonly segmentsPerChunk = SEGMENTS_PER_CHUNK,
    /** Node group sizes in ring order when all-reduces go hierarchical. */
    readonly hierarchy: readonly number[] | undefined = undefined,
  ) {
    signal?.addEventListener('abort', () => this.abort(), { once: true });
  }

  /**
   * The right link only carries this rank's sends. The right neighbour closes it when it is done
   * with this world, and in a ring it can be done first: it has every byte this rank sends while this
   * rank still waits for its last segment from the left (the end of the last collective of a
   * finished run, or of a leaver's last step). That close must not fail the collective here, or this
   * rank alone loses the step or the final evaluation its peers completed. A send still in flight
   * fails on its own (see `send`); a dead right neighbour also breaks its side of the ring, which
   * reaches this rank through its left link or the timeout.
   */
  private watch(
    link: FramedLink,
    rank: number,
    side: 'left' | 'right',
    onPeerLost: RingOptions['onPeerLost'],
  ): void {
    link.onFailure((error) => {
      // Our own close fails links with CollectiveAbortedError; only the peer's side is news.
      if (this.closed || !(error instanceof PeerLostError)) return;
      const first = this.broken === undefined && this.rightLost === undefined;
      if (side === 'right') this.rightLost = error;
      else {
        this.broken = error;
        this.abort();
      }
      if (first) onPeerLost?.(rank, error);
    });
  }

  static async connect(options: RingOptions): Promise<RingGroup> {
    const { rank, members, generation, server } = options;
    const size = members.length;
    const timeoutMs = options.timeoutMs ?? 30_000;
    const segment = options.segmentElements ?? DEFAULT_SEGMENT;
    if (rank < 0 || rank >= size) throw new RangeError(`rank ${rank} outside a world of ${size}`);
    server.retire(generation);
    server.authorize(generation, options.token);
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
        options.token,
        timeoutMs,
        options.signal,
        options.receiveInPlace ?? true,
      ),
    ]);
    const group = new RingGroup(
      generation,
      rank,
      size,
      right,
      left,
      timeoutMs,
      segment,
      options.signal,
      server.drops,
      options.segmentsPerChunk,
      options.hierarchical === true && hierarchyPays(nodeGroups(members)) ? nodeGroups(members) : undefined,
    );
    if (options.reducer !== 'js') group.adder = SimdAdder.create();
    group.watch(right, rightRank, 'right', options.onPeerLost);
    group.watch(left, leftRank, 'left', options.onPeerLost);
    return group;
  }

  /** Bytes this rank has sent to its right neighbour in this ring. */
  get bytesSent(): number {
    return this.right?.bytesSent ?? 0;
  }

  /** Before a collective: any break fails it. */
  private check(): void {
    if (this.rightLost !== undefined) throw this.broken ?? this.rightLost;
    this.checkReceiving();
  }

  /** Between the receives of a collective: only a break of what it still receives from fails it. */
  private checkReceiving(): void {
    if (this.broken !== undefined) throw this.broken;
    if (this.closed || this.signal?.aborted)
      throw new CollectiveAbortedError(`generation ${this.generation} was aborted`);
  }

  private async receive(expectedSeq: number, link = this.left as FramedLink): Promise<Buffer> {
    let frame = await link.receive(this.timeoutMs);
    // A frame of another kind or world is not ours to sum: dropped and counted, not fatal.
    while (frame.kind !== FRAME_DATA || frame.generation !== this.generation) {
      this.drops.drop({
        channel: 'collective',
        reason: 'stray frame',
        source: link.peer(),
        detail: `kind ${frame.kind} generation ${frame.generation}, expected data of ${this.generation}`,
      });
      frame = await link.receive(this.timeoutMs);
    }
    if (frame.seq !== expectedSeq >>> 0) {
      throw new ProtocolError(
        `expected data ${expectedSeq} of generation ${this.generation}, got kind ${frame.kind} seq ${frame.seq} generation ${frame.generation}`,
      );
    }
    return frame.payload;
  }

  private send(seq: number, payload: Uint8Array, link = this.right as FramedLink): Promise<void> {
    const sent = link.send(FRAME_DATA, this.generation, seq, payload);
    sent.catch((error: unknown) => {
      // A send the neighbour never got fails the collective here too, at once. One that fails after
      // the collective already failed must not surface as an unhandled rejection.
      if (this.closed || !(error instanceof PeerLostError)) return;
      this.broken ??= error;
      this.abort();
    });
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
    if (wire === 'fp32' && this.hierarchy !== undefined)
      return this.allReduceHierarchical(buffer, this.hierarchy);
    const fp16 = wire !== 'fp32';
    const decode = wire === 'bf16' ? fromBf16Bits : fromHalfBits;
    const chunks = chunkRanges(buffer.length, this.size);
    const longest = Math.ceil(buffer.length / this.size);
    const segment = Math.min(
      this.segmentElements,
      Math.max(MIN_SEGMENT, Math.ceil(longest / this.segmentsPerChunk)),
    );
    const segments = chunks.map((c) => segmentRanges(c, segment));
    const steps = ringSchedule(this.rank, this.size);
    const base = this.seq;
    this.seq += steps.length * Math.max(...segments.map((s) => s.length), 0) + 1;
    try {
      const first = steps[0];
      if (first === undefined) return buffer;
      if (!fp16) this.postReceives(buffer, steps, segments, base);
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
          this.checkReceiving();
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
            const posted = FramedLink.isPosted(payload, buffer.subarray(seg.start, seg.end));
            if (step.mode === 'reduce') this.reduce(buffer.subarray(seg.start, seg.end), incoming);
            else if (!posted) buffer.set(incoming, seg.start);
            if (!posted) (this.left as FramedLink).release(payload);
          }
          if (fp16) (this.left as FramedLink).release(payload);
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
      throw this.broken ?? error;
    } finally {
      this.left?.unpost();
    }
  }

  /**
   * The hierarchical all-reduce of hierarchy.ts on this ring's links (both directions of each). Every
   * directed link numbers its own messages from the same base, so both ends agree on each seq.
   */
  private async allReduceHierarchical(
    buffer: Float32Array,
    groups: readonly number[],
  ): Promise<Float32Array> {
    const ops = hierarchySchedule(this.rank, groups);
    const chunks = chunkRanges(buffer.length, groups.length);
    const base = this.seq;
    // The same advance on every rank (their schedules differ in length): at most 2G messages per
    // directed link in each of the three phases.
    this.seq += 8 * groups.length + 1;
    const next = { left: base, right: base };
    const inbound = { left: base, right: base };
    const link = (side: 'left' | 'right') => (side === 'left' ? this.left : this.right) as FramedLink;
    const sends: Promise<void>[] = [];
    const send = (side: 'left' | 'right', payload: Uint8Array) => {
      sends.push(this.send(next[side]++, payload, link(side)));
    };
    try {
      for (const op of ops)
        await this.hierarchyOp(op, buffer, chunks, send, (side) => this.receive(inbound[side]++, link(side)));
      await Promise.all(sends);
      return buffer;
    } catch (error) {
      this.abort();
      throw this.broken ?? error;
    }
  }

  private async hierarchyOp(
    op: HierarchyOp,
    buffer: Float32Array,
    chunks: readonly Range[],
    send: (side: 'left' | 'right', payload: Uint8Array) => void,
    receive: (side: 'left' | 'right') => Promise<Buffer>,
  ): Promise<void> {
    const range = chunks[op.chunk] as Range;
    if (op.op === 'send') {
      // A copy: this region is overwritten later in the same all-reduce by a sum that may not
      // depend on these bytes having left (the broadcast back comes from another direction).
      send(op.to, new Uint8Array(buffer.slice(range.start, range.end).buffer));
      return;
    }
    const payload = await receive(op.op === 'forward' ? 'left' : op.from);
    this.check();
    const count = range.end - range.start;
    if (payload.byteLength !== count * 4)
      throw new ProtocolError(`segment of ${payload.byteLength} bytes, expected ${count * 4}`);
    if (op.op === 'forward') {
      send('right', payload);
      return;
    }
    const incoming = new Float32Array(count);
    new Uint8Array(incoming.buffer).set(payload);
    if (op.mode === 'add') this.reduce(buffer.subarray(range.start, range.end), incoming);
    else buffer.set(incoming, range.start);
  }

  /**
   * Posts where the kernel writes each frame's body, by the frame's seq. The all-gather's go straight
   * into `buffer`, where the final values belong, with no copy in JavaScript: safe for the reason
   * `encode` may send without a copy (a region's final value cannot arrive before this rank's own
   * send of that region has left). The reduce-scatter's go into slots of the SIMD adder's memory,
   * where its loop reads them.
   */
  private postReceives(
    buffer: Float32Array,
    steps: readonly RingStep[],
    segments: readonly Range[][],
    base: number,
  ): void {
    const left = this.left as FramedLink;
    let adder = this.left?.inPlace === true ? this.adder : undefined;
    if (adder !== undefined) {
      let slots = 0;
      let longest = 0;
      for (const step of steps)
        if (step.mode === 'reduce')
          for (const seg of segments[step.receiveChunk] ?? []) {
            slots += slotSize((seg.end - seg.start) * 4);
            longest = Math.max(longest, seg.end - seg.start);
          }
      if (!adder.reserve(longest, slots)) adder = undefined;
    }
    let seq = base;
    let slot = 0;
    for (const step of steps) {
      for (const seg of segments[step.receiveChunk] ?? []) {
        const bytes = (seg.end - seg.start) * 4;
        if (step.mode === 'copy')
          left.post(seq, new Uint8Array(buffer.buffer, buffer.byteOffset + seg.start * 4, bytes));
        else if (adder !== undefined) {
          left.post(seq, adder.slot(slot, bytes));
          slot += slotSize(bytes);
        }
        seq++;
      }
    }
  }

  private reduce(target: Float32Array, incoming: Float32Array): void {
    if (this.adder === undefined) addInto(target, incoming);
    else this.adder.addInto(target, incoming);
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
        this.checkReceiving();
        out.set(part, offset);
        offset += part.byteLength;
        if (forward) sends.push(this.send(base + 1 + i, part));
      }
      if (offset !== total) throw new ProtocolError(`broadcast delivered ${offset} of ${total} bytes`);
      await Promise.all(sends);
      return out;
    } catch (error) {
      this.abort();
      throw this.broken ?? error;
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
