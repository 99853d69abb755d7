/**
 * Framed messages over TCP between workers. A frame is [u32 length][u8 kind][u32 generation][u32 seq]
 * then the payload. Every connection starts with a handshake that names the job, the generation and
 * the ranks and proves, both ways, that each side holds the generation's link token (the world record
 * in the rendezvous carries it): HELLO (dialler's nonce) → CHALLENGE (listener's nonce) → AUTH (the
 * dialler's HMAC of both) → ACCEPT (the listener's HMAC). The token itself never crosses the wire, so
 * a process that is not a member of the world can neither join a ring nor pose as a neighbour, and a
 * connection from another job or an older world is refused instead of corrupting a sum. Until the
 * handshake is done a link takes only small frames: a stranger cannot make a worker allocate.
 */
import { createHmac, randomBytes, timingSafeEqual } from 'node:crypto';
import { createConnection, createServer, type Server, type Socket } from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';
import { z } from 'zod';
import { DropCounter } from '../../operator/api/drops.ts';
import { WorkerError } from '../errors.ts';

/** The world changed under a collective: rejoining (a new generation) is the way on. */
export class CollectiveError extends WorkerError {
  override readonly name: string = 'CollectiveError';
  readonly classification = 'retryable';
}
/** A neighbour closed its connection or it broke: the world has changed. */
export class PeerLostError extends CollectiveError {
  override readonly name = 'PeerLostError';
}
/** The collective was cancelled because a new world (generation) is forming, or the worker stops. */
export class CollectiveAbortedError extends CollectiveError {
  override readonly name = 'CollectiveAbortedError';
}
export class CollectiveTimeoutError extends CollectiveError {
  override readonly name = 'CollectiveTimeoutError';
}
/** The bytes on the wire are not what this protocol expects (a bug or a foreign peer). */
export class ProtocolError extends CollectiveError {
  override readonly name = 'ProtocolError';
}

/** The handshake failed: another job, an old world, a wrong token, or bytes that are not ours. */
export class LinkRefusedError extends CollectiveError {
  override readonly name = 'LinkRefusedError';
  constructor(
    readonly reason: string,
    message: string,
  ) {
    super(message);
  }
}

export const FRAME_HELLO = 1;
export const FRAME_DATA = 2;
export const FRAME_CHALLENGE = 3;
export const FRAME_AUTH = 4;
export const FRAME_ACCEPT = 5;
const HEADER = 13;
/** A frame larger than this is a protocol violation, not a big tensor (tensors are segmented). */
const MAX_FRAME = 256 * 1024 * 1024;
/** The largest frame a link takes before its handshake is done. */
export const HANDSHAKE_MAX_FRAME = 4096;
/** How long a listener gives a dialler for each handshake step. */
const HANDSHAKE_MS = 10_000;
/**
 * How long a listener holds a dialler's HELLO for a generation this worker has not adopted yet (its
 * neighbour may see the new world first): the token to check it with comes with the adoption.
 */
const TOKEN_WAIT_MS = 60_000;
/** Connections still in their handshake; more are cut at once (a flood of strangers). */
const MAX_PENDING = 64;
/**
 * The receiving side of a link reads into one buffer of this size, reused for every read: Node's
 * default reads fresh 64 KiB chunks, and that read path alone halved the bandwidth of loopback TCP.
 */
const READ_BUFFER = 1024 * 1024;
/**
 * Reading in place: the kernel writes a frame's body straight into its payload buffer (or into the
 * caller's own memory posted for that frame), so only what a read catches after a header passes
 * through this smaller buffer and is copied.
 */
const IN_PLACE_READ_BUFFER = 64 * 1024;

/** How a socket connected with `onread` hands its reads to a link (see `dial`). */
export interface LinkReader {
  attach(sink: { target(scratch: Buffer): Uint8Array; read(bytes: number, buffer: Uint8Array): void }): void;
  /** Whether reads may go into the payload being filled (false: everything through the scratch). */
  readonly inPlace: boolean;
}

export interface Frame {
  readonly kind: number;
  readonly generation: number;
  readonly seq: number;
  readonly payload: Buffer;
}

const NONCE = /^[0-9a-f]{32}$/;
const HelloSchema = z.strictObject({
  job: z.string().min(1).max(253),
  generation: z.int().min(0).max(0xffff_ffff),
  fromRank: z.int().min(0),
  toRank: z.int().min(0),
  size: z.int().min(1),
  nonce: z.string().regex(NONCE),
});
export type Hello = z.output<typeof HelloSchema>;
/** What a ring asks of its dialler: the HELLO without the nonce, which `dial` draws. */
export type HelloRequest = Omit<Hello, 'nonce'>;

export function linkMac(
  token: string,
  role: 'dialler' | 'listener',
  hello: Hello,
  challenge: string,
): Buffer {
  const transcript = JSON.stringify([
    'tensile-link-v1',
    role,
    hello.job,
    hello.generation,
    hello.fromRank,
    hello.toRank,
    hello.size,
    hello.nonce,
    challenge,
  ]);
  return createHmac('sha256', token).update(transcript).digest();
}

function macMatches(expected: Buffer, got: Buffer): boolean {
  return got.length === expected.length && timingSafeEqual(got, expected);
}

export function encodeFrame(kind: number, generation: number, seq: number, payload: Uint8Array): Buffer[] {
  const header = Buffer.allocUnsafe(HEADER);
  header.writeUInt32BE(payload.byteLength + HEADER - 4, 0);
  header.writeUInt8(kind, 4);
  header.writeUInt32BE(generation >>> 0, 5);
  header.writeUInt32BE(seq >>> 0, 9);
  return [header, Buffer.from(payload.buffer, payload.byteOffset, payload.byteLength)];
}

/**
 * One framed connection. Incoming frames queue until read; a read waits at most `timeoutMs` and fails
 * with a typed error when the peer goes away or the link is closed.
 */
export class FramedLink {
  /** The header being read (it may be split across reads). */
  private readonly header = Buffer.alloc(HEADER);
  private headerBytes = 0;
  /** The payload being read, and how much of it has arrived. */
  private body: { frame: Omit<Frame, 'payload'>; payload: Buffer; filled: number } | undefined;
  private readonly frames: Frame[] = [];
  private waiter:
    | { resolve: (f: Frame) => void; reject: (e: Error) => void; timer: NodeJS.Timeout }
    | undefined;
  private failure: Error | undefined;
  private readonly writes = new Set<(error: Error) => void>();
  /** Chunks are views of the socket's reused read buffer: a payload must be copied out of them. */
  private readonly borrowed: boolean;
  /** Payload buffers given back by `release`, by size: fresh ones cost page faults and collections. */
  private readonly spare = new Map<number, Buffer[]>();
  /** Raised to the full frame size once the handshake has authenticated the peer. */
  maxFrame = HANDSHAKE_MAX_FRAME;
  /** The frame kind whose arrival raises `maxFrame` (see `raiseLimitAfter`). */
  private raiseAfter: number | undefined;
  private readonly failureListeners: ((error: Error) => void)[] = [];
  /** Bytes written to this link (headers included): what a topology costs, link by link. */
  bytesSent = 0;

  /** The part of a payload handed to the socket for the read in flight (reading in place). */
  private direct: Uint8Array | undefined;
  /** Memory the receiver posted for the payload of a DATA frame, by seq. */
  private readonly posted = new Map<number, Uint8Array>();
  /** Whether reads go straight into payloads and posted memory (see `post`). */
  readonly inPlace: boolean;

  /**
   * `reader` is how a socket connected with `onread` hands its reads over; without it the link reads
   * the socket's 'data' events.
   */
  constructor(
    readonly socket: Socket,
    reader?: LinkReader,
  ) {
    socket.setNoDelay(true);
    this.peer();
    this.borrowed = reader !== undefined;
    this.inPlace = reader?.inPlace ?? false;
    if (reader !== undefined)
      reader.attach({
        target: (scratch) => this.readTarget(scratch),
        read: (bytes, buffer) => this.onRead(bytes, buffer),
      });
    else socket.on('data', (chunk: Buffer) => this.onData(chunk));
    socket.on('error', (error) =>
      this.fail(new PeerLostError(`connection to ${this.peer()} broke: ${error.message}`, { cause: error })),
    );
    socket.on('close', () => this.fail(new PeerLostError(`connection to ${this.peer()} closed`)));
  }

  /** Read once: a destroyed socket no longer knows its peer. */
  private remote: string | undefined;

  peer(): string {
    if (this.remote === undefined && this.socket.remoteAddress !== undefined)
      this.remote = `${this.socket.remoteAddress}:${this.socket.remotePort ?? '?'}`;
    return this.remote ?? '?';
  }

  /** Where the next read goes: the rest of the payload being filled, else the scratch buffer. */
  private readTarget(scratch: Buffer): Uint8Array {
    const body = this.body;
    this.direct =
      this.inPlace && body !== undefined && this.failure === undefined
        ? body.payload.subarray(body.filled)
        : undefined;
    return this.direct ?? scratch;
  }

  private onRead(bytes: number, buffer: Uint8Array): void {
    const body = this.body;
    if (body !== undefined && this.direct !== undefined && buffer === this.direct) {
      this.direct = undefined;
      body.filled += bytes;
      if (body.filled === body.payload.length) {
        this.body = undefined;
        this.deliver({ ...body.frame, payload: body.payload });
      }
      return;
    }
    this.onData(Buffer.from(buffer.buffer, buffer.byteOffset, bytes));
  }

  /**
   * Lets the payload of DATA frame `seq` arrive in `target` (its exact size) instead of a buffer of
   * the link's: the receiver of an all-gather posts the regions the values end up in. A frame that
   * arrived before its post is delivered in a buffer of its own as usual; `unpost` forgets the rest.
   */
  post(seq: number, target: Uint8Array): void {
    if (this.inPlace) this.posted.set(seq >>> 0, target);
  }

  unpost(): void {
    this.posted.clear();
  }

  /** Whether `payload` is memory the receiver posted (not the link's, not to be released). */
  static isPosted(payload: ArrayBufferView, target: ArrayBufferView): boolean {
    return payload.buffer === target.buffer && payload.byteOffset === target.byteOffset;
  }

  private payloadFor(kind: number, seq: number, size: number): Buffer {
    const posted = kind === FRAME_DATA ? this.posted.get(seq) : undefined;
    if (posted !== undefined && posted.byteLength === size) {
      this.posted.delete(seq);
      return Buffer.from(posted.buffer, posted.byteOffset, posted.byteLength);
    }
    return this.allocate(size);
  }

  /**
   * Copies each payload byte once, into a buffer of its own: concatenating the socket's chunks again
   * for every frame (and slicing for alignment afterwards) cost more than the reduction itself.
   * A payload that arrives whole inside one chunk of its own is a view of that chunk, not a copy.
   */
  private onData(chunk: Buffer): void {
    let at = 0;
    while (at < chunk.length && this.failure === undefined) {
      const body = this.body;
      if (body !== undefined) {
        const n = Math.min(chunk.length - at, body.payload.length - body.filled);
        chunk.copy(body.payload, body.filled, at, at + n);
        body.filled += n;
        at += n;
        if (body.filled === body.payload.length) {
          this.body = undefined;
          this.deliver({ ...body.frame, payload: body.payload });
        }
        continue;
      }
      let header: Buffer;
      let offset: number;
      if (this.headerBytes === 0 && chunk.length - at >= HEADER) {
        header = chunk;
        offset = at;
        at += HEADER;
      } else {
        const n = Math.min(chunk.length - at, HEADER - this.headerBytes);
        chunk.copy(this.header, this.headerBytes, at, at + n);
        this.headerBytes += n;
        at += n;
        if (this.headerBytes < HEADER) return;
        this.headerBytes = 0;
        header = this.header;
        offset = 0;
      }
      const length = header.readUInt32BE(offset);
      if (length < HEADER - 4 || length > this.maxFrame) {
        this.fail(new ProtocolError(`bad frame length ${length} from ${this.peer()}`));
        this.socket.destroy();
        return;
      }
      const frame = {
        kind: header.readUInt8(offset + 4),
        generation: header.readUInt32BE(offset + 5),
        seq: header.readUInt32BE(offset + 9),
      };
      const size = length + 4 - HEADER;
      if (chunk.length - at >= size) {
        let payload = chunk.subarray(at, at + size);
        if (this.borrowed) {
          payload = this.payloadFor(frame.kind, frame.seq, size);
          chunk.copy(payload, 0, at, at + size);
        }
        this.deliver({ ...frame, payload });
        at += size;
      } else {
        this.body = { frame, payload: this.payloadFor(frame.kind, frame.seq, size), filled: 0 };
      }
    }
  }

  /** Its own ArrayBuffer at offset 0: the receiver can view it as floats without another copy. */
  private allocate(size: number): Buffer {
    return this.spare.get(size)?.pop() ?? Buffer.allocUnsafeSlow(size);
  }

  /**
   * Hands a received payload back for reuse by a later frame of the same size. The caller must not
   * touch it afterwards.
   */
  release(payload: Buffer): void {
    if (payload.byteOffset !== 0 || payload.byteLength !== payload.buffer.byteLength) return;
    const list = this.spare.get(payload.byteLength) ?? [];
    if (list.length >= 8) return;
    list.push(payload);
    this.spare.set(payload.byteLength, list);
  }

  /**
   * Raises `maxFrame` as soon as a frame of `kind` is parsed, before the next frame of the same read
   * is: the listener's first DATA frame may arrive in one read with its ACCEPT, before the dialler's
   * handshake code runs again. The dialler only chose to dial this peer; a wrong ACCEPT still fails
   * the handshake and closes the link.
   */
  raiseLimitAfter(kind: number): void {
    this.raiseAfter = kind;
  }

  private deliver(frame: Frame): void {
    if (frame.kind === this.raiseAfter) {
      this.raiseAfter = undefined;
      this.maxFrame = MAX_FRAME;
    }
    const waiter = this.waiter;
    if (waiter !== undefined) {
      this.waiter = undefined;
      clearTimeout(waiter.timer);
      waiter.resolve(frame);
    } else {
      this.frames.push(frame);
    }
  }

  /**
   * Calls `listener` once when the link fails, at once if it already has: a broken link is news
   * even while nobody reads from it (the ring is idle while the model computes).
   */
  onFailure(listener: (error: Error) => void): void {
    if (this.failure !== undefined) listener(this.failure);
    else this.failureListeners.push(listener);
  }

  fail(error: Error): void {
    if (this.failure !== undefined) return;
    this.failure = error;
    for (const listener of this.failureListeners.splice(0)) listener(error);
    const waiter = this.waiter;
    if (waiter !== undefined) {
      this.waiter = undefined;
      clearTimeout(waiter.timer);
      waiter.reject(error);
    }
    for (const reject of this.writes) reject(error);
    this.writes.clear();
  }

  receive(timeoutMs: number): Promise<Frame> {
    const frame = this.frames.shift();
    if (frame !== undefined) return Promise.resolve(frame);
    if (this.failure !== undefined) return Promise.reject(this.failure);
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.waiter = undefined;
        reject(new CollectiveTimeoutError(`no data from ${this.peer()} for ${timeoutMs} ms`));
      }, timeoutMs);
      this.waiter = { resolve, reject, timer };
    });
  }

  /**
   * Writes a frame without copying `payload`; resolves once the socket has handed it to the kernel,
   * so the caller may reuse `payload` only after that (or when the link failed: a destroyed socket
   * writes nothing more).
   */
  send(kind: number, generation: number, seq: number, payload: Uint8Array): Promise<void> {
    if (this.failure !== undefined) return Promise.reject(this.failure);
    const [header, body] = encodeFrame(kind, generation, seq, payload) as [Buffer, Buffer];
    this.bytesSent += header.byteLength + body.byteLength;
    return new Promise<void>((resolve, reject) => {
      const settle = (error: Error) => {
        this.writes.delete(settle);
        reject(error);
      };
      this.writes.add(settle);
      // One writev for header and payload instead of two segments on the wire.
      this.socket.cork();
      this.socket.write(header);
      this.socket.write(body, (error) => {
        if (!this.writes.delete(settle)) return;
        if (error) reject(new PeerLostError(`write to ${this.peer()} failed: ${error.message}`));
        else resolve();
      });
      this.socket.uncork();
    });
  }

  close(): void {
    this.fail(new CollectiveAbortedError('link closed'));
    this.socket.destroy();
  }
}

function parseJson(frame: Frame): unknown {
  try {
    return JSON.parse(frame.payload.toString('utf8'));
  } catch {
    return undefined;
  }
}

export type ProbeResult = 'refused' | 'open' | 'unknown';

/**
 * Whether a worker's collective server still listens at `address`. Every worker listens for its
 * whole life, so a refused connection means its process is gone (the kernel answers for the dead).
 * A dying process's links can close a few milliseconds before its listening socket does, so an
 * accepted connection proves life only once it stayed open for `holdMs` (a dead listener resets
 * what it accepted). No answer within `timeoutMs` (a host gone silent) proves nothing: the heartbeat
 * timeout decides.
 */
export async function probe(
  address: string,
  timeoutMs: number,
  holdMs = timeoutMs / 5,
): Promise<ProbeResult> {
  const match = /^\[?([^\]]+)\]?:(\d+)$/.exec(address);
  if (match === null) return 'unknown';
  const deadline = performance.now() + timeoutMs;
  for (;;) {
    const left = deadline - performance.now();
    const result = await probeOnce(match[1] as string, Number(match[2]), left, Math.min(holdMs, left));
    // A connection that failed at once, neither refused nor accepted (reset mid-handshake by a
    // listener being torn down): ask again until the kernel answers plainly or the time is up.
    if (result !== 'failed') return result;
    if (deadline - performance.now() < PROBE_RETRY_MS) return 'unknown';
    await new Promise((resolve) => setTimeout(resolve, PROBE_RETRY_MS));
  }
}

const PROBE_RETRY_MS = 20;

function probeOnce(
  host: string,
  port: number,
  timeoutMs: number,
  holdMs: number,
): Promise<ProbeResult | 'failed'> {
  return new Promise((resolve) => {
    const socket = createConnection({ host, port });
    let connected = false;
    const timers: NodeJS.Timeout[] = [];
    const done = (result: ProbeResult | 'failed') => {
      for (const t of timers) clearTimeout(t);
      socket.removeAllListeners();
      socket.on('error', () => undefined);
      socket.destroy();
      resolve(result);
    };
    timers.push(setTimeout(() => done(connected ? 'open' : 'unknown'), timeoutMs));
    socket.once('connect', () => {
      connected = true;
      timers.push(setTimeout(() => done('open'), holdMs));
    });
    socket.on('data', () => undefined);
    socket.once('close', () => done(connected ? 'refused' : 'failed'));
    socket.once('error', (error: NodeJS.ErrnoException) => {
      if (error.code === 'ECONNREFUSED' || (connected && error.code === 'ECONNRESET')) done('refused');
    });
  });
}

function parseHello(frame: Frame): Hello {
  if (frame.kind !== FRAME_HELLO)
    throw new LinkRefusedError('protocol', `expected HELLO, got frame kind ${frame.kind}`);
  const parsed = HelloSchema.safeParse(parseJson(frame));
  if (!parsed.success) throw new LinkRefusedError('malformed hello', 'malformed HELLO');
  return parsed.data;
}

function expect(frame: Frame, kind: number, what: string): Buffer {
  if (frame.kind !== kind)
    throw new LinkRefusedError('protocol', `expected ${what}, got frame kind ${frame.kind}`);
  return frame.payload;
}

export interface CollectiveServerOptions {
  /** Where refused connections and dropped frames are counted (and logged). */
  readonly drops?: DropCounter;
}

/**
 * The listening side: one per worker, for its whole life. Inbound links are kept by (generation, from
 * rank) until the ring of that generation claims them; links of older generations are closed. A link
 * is kept only after its handshake proved the dialler holds the generation's token (`authorize`).
 */
export class CollectiveServer implements AsyncDisposable {
  private readonly server: Server;
  private readonly arrived = new Map<string, FramedLink>();
  private readonly wanted = new Map<string, (link: FramedLink) => void>();
  private readonly tokens = new Map<number, string>();
  private readonly tokenWaiters = new Map<number, Set<() => void>>();
  private pending = 0;
  private minGeneration = 0;
  readonly drops: DropCounter;

  private constructor(
    readonly job: string,
    server: Server,
    options: CollectiveServerOptions,
  ) {
    this.server = server;
    this.drops = options.drops ?? new DropCounter();
  }

  static async listen(
    job: string,
    host: string,
    port = 0,
    options: CollectiveServerOptions = {},
  ): Promise<CollectiveServer> {
    let self: CollectiveServer | undefined;
    const server = createServer((socket) => self?.accept(socket));
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(port, host, () => resolve());
    });
    self = new CollectiveServer(job, server, options);
    return self;
  }

  get address(): string {
    const address = this.server.address();
    if (address === null || typeof address === 'string')
      throw new Error('collective server is not listening on TCP');
    const host = address.family === 'IPv6' ? `[${address.address}]` : address.address;
    return `${host}:${address.port}`;
  }

  /** The token of `generation`'s world: links of that generation must prove they hold it. */
  authorize(generation: number, token: string): void {
    this.tokens.set(generation, token);
    for (const wake of this.tokenWaiters.get(generation) ?? []) wake();
    this.tokenWaiters.delete(generation);
  }

  private async tokenFor(generation: number): Promise<string> {
    const known = this.tokens.get(generation);
    if (known !== undefined) return known;
    const waiters = this.tokenWaiters.get(generation) ?? new Set<() => void>();
    this.tokenWaiters.set(generation, waiters);
    await new Promise<void>((resolve) => {
      const timer = setTimeout(done, TOKEN_WAIT_MS);
      function done() {
        clearTimeout(timer);
        waiters.delete(done);
        resolve();
      }
      waiters.add(done);
    });
    const token = this.tokens.get(generation);
    if (token === undefined || generation < this.minGeneration)
      throw new LinkRefusedError('unknown generation', `generation ${generation} never formed here`);
    return token;
  }

  private accept(socket: Socket): void {
    const source = `${socket.remoteAddress ?? '?'}:${socket.remotePort ?? '?'}`;
    if (this.pending >= MAX_PENDING) {
      this.drops.drop({ channel: 'collective', reason: 'too many handshakes', source });
      socket.destroy();
      return;
    }
    this.pending++;
    const link = new FramedLink(socket);
    this.handshake(link)
      .then(({ hello }) => this.keep(hello, link))
      .catch((error: unknown) => {
        const reason =
          error instanceof LinkRefusedError
            ? error.reason
            : error instanceof ProtocolError
              ? 'bad frame'
              : error instanceof CollectiveTimeoutError
                ? 'handshake timeout'
                : 'connection lost';
        this.drops.drop({
          channel: 'collective',
          reason,
          source,
          detail: error instanceof Error ? error.message : String(error),
        });
        link.close();
      })
      .finally(() => {
        this.pending--;
      });
  }

  /** The listener's half of the handshake (see the header). */
  private async handshake(link: FramedLink): Promise<{ hello: Hello }> {
    const hello = parseHello(await link.receive(HANDSHAKE_MS));
    if (hello.job !== this.job)
      throw new LinkRefusedError('another job', `a dialler of job "${hello.job}" reached job "${this.job}"`);
    if (hello.generation < this.minGeneration)
      throw new LinkRefusedError('old generation', `generation ${hello.generation} is over`);
    const challenge = randomBytes(16).toString('hex');
    await link.send(FRAME_CHALLENGE, hello.generation, 0, Buffer.from(challenge));
    const [token, auth] = await Promise.all([
      this.tokenFor(hello.generation),
      link.receive(HANDSHAKE_MS + TOKEN_WAIT_MS),
    ]);
    const proof = expect(auth, FRAME_AUTH, 'AUTH');
    if (!macMatches(linkMac(token, 'dialler', hello, challenge), proof))
      throw new LinkRefusedError(
        'bad token',
        `rank ${hello.fromRank} of generation ${hello.generation} failed the token check`,
      );
    if (hello.generation < this.minGeneration)
      throw new LinkRefusedError('old generation', `generation ${hello.generation} is over`);
    await link.send(FRAME_ACCEPT, hello.generation, 0, linkMac(token, 'listener', hello, challenge));
    link.maxFrame = MAX_FRAME;
    return { hello };
  }

  private keep(hello: Hello, link: FramedLink): void {
    const key = `${hello.generation}:${hello.fromRank}:${hello.toRank}`;
    const claim = this.wanted.get(key);
    if (claim !== undefined) {
      this.wanted.delete(key);
      claim(link);
    } else {
      this.arrived.get(key)?.close();
      this.arrived.set(key, link);
    }
  }

  /** Waits for the link from `fromRank` to `toRank` (this worker) in `generation`. */
  inbound(
    generation: number,
    fromRank: number,
    toRank: number,
    timeoutMs: number,
    signal?: AbortSignal,
  ): Promise<FramedLink> {
    const key = `${generation}:${fromRank}:${toRank}`;
    const ready = this.arrived.get(key);
    if (ready !== undefined) {
      this.arrived.delete(key);
      return Promise.resolve(ready);
    }
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.wanted.delete(key);
        reject(
          new CollectiveTimeoutError(
            `rank ${fromRank} did not connect within ${timeoutMs} ms (generation ${generation})`,
          ),
        );
      }, timeoutMs);
      const onAbort = () => {
        clearTimeout(timer);
        this.wanted.delete(key);
        reject(new CollectiveAbortedError('aborted while waiting for a neighbour'));
      };
      signal?.addEventListener('abort', onAbort, { once: true });
      this.wanted.set(key, (link) => {
        clearTimeout(timer);
        signal?.removeEventListener('abort', onAbort);
        resolve(link);
      });
    });
  }

  /** Forgets links and tokens of generations older than `generation`. */
  retire(generation: number): void {
    this.minGeneration = generation;
    for (const [key, link] of this.arrived) {
      if (Number(key.split(':')[0]) < generation) {
        link.close();
        this.arrived.delete(key);
      }
    }
    for (const old of this.tokens.keys()) if (old < generation) this.tokens.delete(old);
    for (const [old, waiters] of this.tokenWaiters) if (old < generation) for (const wake of waiters) wake();
  }

  async [Symbol.asyncDispose](): Promise<void> {
    for (const link of this.arrived.values()) link.close();
    this.arrived.clear();
    for (const waiters of this.tokenWaiters.values()) for (const wake of waiters) wake();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }
}

async function connectSocket(host: string, port: number, inPlace: boolean): Promise<FramedLink> {
  type Sink = Parameters<LinkReader['attach']>[0];
  let sink: Sink | undefined;
  const scratch = Buffer.allocUnsafeSlow(inPlace ? IN_PLACE_READ_BUFFER : READ_BUFFER);
  const socket = await new Promise<Socket>((resolve, reject) => {
    // createConnection, not socket.connect: only the former honours `onread`.
    const s = createConnection(
      {
        port,
        host,
        onread: {
          // Asked again after every read: the body being filled, or the scratch.
          buffer: () => sink?.target(scratch) ?? scratch,
          callback: (bytes, buffer) => {
            sink?.read(bytes, buffer);
            return true;
          },
        },
      },
      () => {
        s.removeListener('error', reject);
        resolve(s);
      },
    );
    s.once('error', reject);
  });
  // The peer sends nothing before our HELLO, so no read can come before `attach`.
  return new FramedLink(socket, {
    inPlace,
    attach: (attached) => {
      sink = attached;
    },
  });
}

/** The dialler's half of the handshake (see the header): returns once the listener proved itself. */
async function introduce(link: FramedLink, hello: Hello, token: string, timeoutMs: number): Promise<void> {
  await link.send(FRAME_HELLO, hello.generation, 0, Buffer.from(JSON.stringify(hello)));
  const challenge = expect(await link.receive(timeoutMs), FRAME_CHALLENGE, 'CHALLENGE').toString('utf8');
  if (!NONCE.test(challenge)) throw new LinkRefusedError('malformed challenge', 'malformed CHALLENGE');
  link.raiseLimitAfter(FRAME_ACCEPT);
  await link.send(FRAME_AUTH, hello.generation, 0, linkMac(token, 'dialler', hello, challenge));
  const proof = expect(await link.receive(timeoutMs), FRAME_ACCEPT, 'ACCEPT');
  if (!macMatches(linkMac(token, 'listener', hello, challenge), proof))
    throw new LinkRefusedError('bad token', `the listener of rank ${hello.toRank} does not hold the token`);
  link.maxFrame = MAX_FRAME;
}

/**
 * Dials `address` and authenticates with `token`; retries while the peer's server is not up yet (or
 * refuses: it may not have adopted the world yet). The dialling side is the one that receives the data
 * (rings dial their left neighbour): only a socket we connect can read into a reused buffer (`onread`),
 * and reads are where loopback bandwidth was lost.
 */
export async function dial(
  address: string,
  request: HelloRequest,
  token: string,
  timeoutMs: number,
  signal?: AbortSignal,
  inPlace = true,
): Promise<FramedLink> {
  const match = /^\[?([^\]]+)\]?:(\d+)$/.exec(address);
  if (match === null) throw new ProtocolError(`bad collective address "${address}"`);
  const host = match[1] as string;
  const port = Number(match[2]);
  const deadline = Date.now() + timeoutMs;
  let lastError: Error | undefined;
  while (Date.now() < deadline) {
    if (signal?.aborted) throw new CollectiveAbortedError('aborted while connecting');
    let link: FramedLink | undefined;
    const onAbort = () => link?.close();
    signal?.addEventListener('abort', onAbort, { once: true });
    try {
      link = await connectSocket(host, port, inPlace);
      const hello: Hello = { ...request, nonce: randomBytes(16).toString('hex') };
      await introduce(link, hello, token, Math.max(1, deadline - Date.now()));
      return link;
    } catch (error) {
      link?.close();
      lastError = error as Error;
      await sleep(50);
    } finally {
      signal?.removeEventListener('abort', onAbort);
    }
  }
  throw new CollectiveTimeoutError(
    `cannot connect to rank ${request.toRank} at ${address}: ${lastError?.message ?? 'timeout'}`,
  );
}
