/** Ring all-reduce, broadcast and barrier over real TCP connections on loopback. */

import { connect, createServer, Socket } from 'node:net';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { RingGroup } from '../../worker/collective/group.ts';
import {
  CollectiveAbortedError,
  CollectiveError,
  CollectiveServer,
  CollectiveTimeoutError,
  dial,
  encodeFrame,
  FRAME_ACCEPT,
  FRAME_CHALLENGE,
  FRAME_DATA,
  FRAME_HELLO,
  FramedLink,
  type LinkReader,
  linkMac,
  PeerLostError,
  probe,
} from '../../worker/collective/transport.ts';
import { eventually } from '../helpers/eventually.ts';

const TOKEN = 'the-world-link-token-1';

async function ring(size: number, generation = 1, segmentElements = 1000, job = 'job') {
  const servers = await Promise.all(
    Array.from({ length: size }, () => CollectiveServer.listen(job, '127.0.0.1')),
  );
  const members = servers.map((s) => ({ address: s.address }));
  const groups = await Promise.all(
    servers.map((server, rank) =>
      RingGroup.connect({
        job,
        generation,
        rank,
        members,
        server,
        token: TOKEN,
        segmentElements,
        timeoutMs: 5000,
      }),
    ),
  );
  return {
    servers,
    groups,
    async close() {
      for (const g of groups) await g[Symbol.asyncDispose]();
      for (const s of servers) await s[Symbol.asyncDispose]();
    },
  };
}

function random(length: number, seed: number): Float32Array {
  let x = seed;
  return Float32Array.from({ length }, () => {
    x = (x * 1103515245 + 12345) % 2147483648;
    return x / 2147483648 - 0.5;
  });
}

for (const size of [1, 2, 3, 4]) {
  test(`all-reduce of ${size} ranks: every rank holds the sum, bit for bit the same`, async () => {
    const r = await ring(size);
    try {
      const length = 10_007;
      const inputs = Array.from({ length: size }, (_, i) => random(length, i + 1));
      const expected = new Float64Array(length);
      for (const input of inputs)
        for (let i = 0; i < length; i++) expected[i] = (expected[i] as number) + (input[i] as number);
      const results = await Promise.all(
        r.groups.map((g, i) => g.allReduce(Float32Array.from(inputs[i] as Float32Array))),
      );
      for (let i = 0; i < length; i++)
        assert.ok(Math.abs((results[0]?.[i] as number) - (expected[i] as number)) < 1e-5, `element ${i}`);
      for (const result of results)
        assert.equal(Buffer.from(result.buffer), Buffer.from((results[0] as Float32Array).buffer));
    } finally {
      await r.close();
    }
  });
}

test('repeated all-reduces on one ring stay in step', async () => {
  const r = await ring(3);
  try {
    for (let round = 0; round < 20; round++) {
      const results = await Promise.all(
        r.groups.map((g, rank) => g.allReduce(Float32Array.from({ length: 50 + round }, () => rank + round))),
      );
      for (const result of results) assert.ok(result.every((v) => v === 3 * round + 3));
    }
  } finally {
    await r.close();
  }
});

test('fp16 on the wire: close to the sum, and identical on every rank', async () => {
  const r = await ring(3);
  try {
    const inputs = [0, 1, 2].map((i) => random(5000, 10 + i));
    const results = await Promise.all(
      r.groups.map((g, i) => g.allReduce(Float32Array.from(inputs[i] as Float32Array), { fp16: true })),
    );
    for (let i = 0; i < 5000; i++) {
      const sum = inputs.reduce((s, input) => s + (input[i] as number), 0);
      assert.ok(Math.abs((results[0]?.[i] as number) - sum) < 5e-3, `element ${i}`);
    }
    for (const result of results)
      assert.equal(Buffer.from(result.buffer), Buffer.from((results[0] as Float32Array).buffer));
  } finally {
    await r.close();
  }
});

test('broadcast delivers the root bytes to every rank (larger than one segment)', async () => {
  const r = await ring(4, 1, 256);
  try {
    const payload = Uint8Array.from({ length: 100_003 }, (_, i) => (i * 7) % 251);
    const results = await Promise.all(
      r.groups.map((g, rank) => g.broadcast(rank === 2 ? payload : undefined, 2)),
    );
    for (const result of results) assert.equal(Buffer.from(result), Buffer.from(payload));
    await Promise.all(r.groups.map((g) => g.barrier()));
  } finally {
    await r.close();
  }
});

test('a peer that dies mid-collective fails the others with a typed error, quickly', async () => {
  const r = await ring(3);
  try {
    const pending = r.groups
      .slice(0, 2)
      .map((g) => g.allReduce(new Float32Array(100_000)).catch((e: unknown) => e));
    await r.groups[2]?.[Symbol.asyncDispose]();
    const errors = await Promise.all(pending);
    for (const error of errors) {
      assert.ok(error instanceof CollectiveError, `expected a CollectiveError, got ${String(error)}`);
      assert.ok(
        error instanceof PeerLostError ||
          error instanceof CollectiveAbortedError ||
          error instanceof CollectiveTimeoutError,
      );
    }
  } finally {
    await r.close();
  }
});

test('a rank that finishes the last collective first and leaves does not fail it for the others', async () => {
  // The end of a run: each rank closes its ring as soon as its last all-reduce resolves. The first
  // to finish holds every byte its left neighbour sends while that neighbour may still wait for its
  // own last segment from further left: the close must not cost it the collective.
  for (let round = 0; round < 30; round++) {
    const r = await ring(3, round + 1);
    try {
      const results = await Promise.all(
        r.groups.map(async (g, rank) => {
          const sum = await g.allReduce(Float32Array.from([rank + 1, 10 * (rank + 1)])).catch((e) => e);
          await g[Symbol.asyncDispose]();
          return sum;
        }),
      );
      for (const [rank, result] of results.entries())
        assert.equal(
          result instanceof Float32Array ? [...result] : String(result),
          [6, 60],
          `round ${round}, rank ${rank}`,
        );
    } finally {
      await r.close();
    }
  }
});

test('an idle ring reports which neighbour broke its link, and only the peer side counts', async () => {
  const servers = await Promise.all([0, 1, 2].map(() => CollectiveServer.listen('job', '127.0.0.1')));
  const members = servers.map((s) => ({ address: s.address }));
  const lost: [number, number][] = [];
  const groups = await Promise.all(
    servers.map((server, rank) =>
      RingGroup.connect({
        job: 'job',
        generation: 1,
        rank,
        members,
        server,
        token: TOKEN,
        timeoutMs: 5000,
        onPeerLost: (peer) => lost.push([rank, peer]),
      }),
    ),
  );
  try {
    // Rank 1 leaves: its neighbours 0 (its left) and 2 (its right) see their links to it break,
    // without any collective in flight; rank 1 itself, which closed them, reports nothing.
    await groups[1]?.[Symbol.asyncDispose]();
    await eventually('a neighbour of rank 1 reports it', () => lost.some(([, peer]) => peer === 1));
    // Whoever saw rank 1 go aborted its ring, so the other may see that close first: each reports
    // the one neighbour whose link broke first, and the leaver reports nothing.
    assert.ok(
      lost.every(([rank]) => rank !== 1),
      JSON.stringify(lost),
    );
    assert.ok(new Set(lost.map(([rank]) => rank)).size === lost.length, 'one report per rank');
    const error = await groups[0]?.allReduce(new Float32Array(10)).catch((e: unknown) => e);
    assert.ok(error instanceof PeerLostError, `the next collective fails with the break: ${String(error)}`);
  } finally {
    for (const g of groups) await g[Symbol.asyncDispose]();
    for (const s of servers) await s[Symbol.asyncDispose]();
  }
});

test('a probe tells a listening worker from a gone one', async () => {
  const live = await CollectiveServer.listen('job', '127.0.0.1');
  const gone = await CollectiveServer.listen('job', '127.0.0.1');
  const goneAddress = gone.address;
  await gone[Symbol.asyncDispose]();
  try {
    assert.is(await probe(live.address, 2000, 50), 'open');
    assert.is(await probe(goneAddress, 2000, 50), 'refused');
  } finally {
    await live[Symbol.asyncDispose]();
  }
});

test('an abort (new generation) cancels a waiting collective', async () => {
  const servers = await Promise.all([0, 1].map(() => CollectiveServer.listen('job', '127.0.0.1')));
  const members = servers.map((s) => ({ address: s.address }));
  const controller = new AbortController();
  const groups = await Promise.all(
    servers.map((server, rank) =>
      RingGroup.connect({
        job: 'job',
        generation: 7,
        rank,
        members,
        server,
        token: TOKEN,
        signal: controller.signal,
      }),
    ),
  );
  const waiting = groups[0]?.allReduce(new Float32Array(10)).catch((e: unknown) => e);
  controller.abort();
  assert.ok((await waiting) instanceof CollectiveError);
  for (const s of servers) await s[Symbol.asyncDispose]();
});

test('a connection from another job or an older generation is refused', async () => {
  const server = await CollectiveServer.listen('job-a', '127.0.0.1');
  const other = await CollectiveServer.listen('job-b', '127.0.0.1');
  try {
    const members = [{ address: server.address }, { address: other.address }];
    // job-b's rank 1 dials job-a's server: job-a must not accept it as its neighbour.
    const foreign = RingGroup.connect({
      job: 'job-b',
      generation: 1,
      rank: 1,
      members,
      server: other,
      token: TOKEN,
      timeoutMs: 800,
    }).catch((e: unknown) => e);
    const mine = server.inbound(1, 1, 0, 800).catch((e: unknown) => e);
    assert.ok((await mine) instanceof CollectiveTimeoutError, 'job-a never saw a link from job-b');
    assert.ok((await foreign) instanceof CollectiveError);
    server.retire(5);
    const old = server.inbound(4, 1, 0, 300).catch((e: unknown) => e);
    assert.ok((await old) instanceof CollectiveTimeoutError);
  } finally {
    await server[Symbol.asyncDispose]();
    await other[Symbol.asyncDispose]();
  }
});

test('frames cut at any byte arrive whole: fresh chunks, one reused read buffer, reads in place, posted memory', async () => {
  const payloads = [0, 1, 4, 13, 1000, 70_000].map((n) =>
    Uint8Array.from({ length: n }, (_, i) => (i * 31 + n) % 256),
  );
  const wire = Buffer.concat(payloads.flatMap((p, seq) => encodeFrame(FRAME_DATA, 3, seq, p)));
  for (const mode of ['data events', 'reused buffer', 'in place', 'posted'] as const) {
    for (const cut of [1, 5, 13, 14, 999, 65_536, wire.length]) {
      type Sink = Parameters<LinkReader['attach']>[0];
      let sink: Sink | undefined;
      const link =
        mode === 'data events'
          ? new FramedLink(new Socket())
          : new FramedLink(new Socket(), {
              inPlace: mode !== 'reused buffer',
              attach: (s) => {
                sink = s;
              },
            });
      // As after a handshake: the 70 kB frame is over the limit of a link that has not authenticated.
      link.maxFrame = 1 << 20;
      // The 1000-byte frame lands in memory of the receiver's when posted.
      const mine = new Uint8Array(1000);
      if (mode === 'posted') link.post(4, mine);
      const scratch = Buffer.alloc(cut);
      if (mode === 'data events')
        for (let at = 0; at < wire.length; at += cut)
          link.socket.emit('data', Buffer.from(wire.subarray(at, Math.min(wire.length, at + cut))));
      else {
        // As the socket does: ask where the next read goes, read at most that much, hand it over.
        let at = 0;
        while (at < wire.length) {
          const target = sink?.target(scratch) ?? scratch;
          const n = Math.min(cut, target.byteLength, wire.length - at);
          target.set(wire.subarray(at, at + n));
          at += n;
          sink?.read(n, target);
          scratch.fill(0xee);
        }
      }
      for (const [seq, payload] of payloads.entries()) {
        const frame = await link.receive(100);
        assert.is(frame.seq, seq, `cut ${cut}, ${mode}`);
        assert.is(frame.generation, 3);
        assert.equal(Buffer.from(frame.payload), Buffer.from(payload), `payload ${seq}, cut ${cut}, ${mode}`);
      }
      if (mode === 'posted') assert.equal(Buffer.from(mine), Buffer.from(payloads[4] as Uint8Array));
      link.close();
    }
  }
});

test('the caller may overwrite its buffer as soon as an all-reduce resolves (sends are not copied)', async () => {
  const r = await ring(2, 1, 128 * 1024);
  try {
    const length = 3_000_001;
    for (let round = 0; round < 3; round++) {
      const buffers = [0, 1].map((rank) => new Float32Array(length).fill(rank + round));
      const results = await Promise.all(
        r.groups.map(async (g, rank) => {
          const out = await g.allReduce(buffers[rank] as Float32Array);
          const copy = Float32Array.from(out);
          out.fill(Number.NaN);
          return copy;
        }),
      );
      for (const result of results)
        assert.ok(
          result.every((v) => v === 1 + 2 * round),
          `round ${round}`,
        );
    }
  } finally {
    await r.close();
  }
});

test("the listener's first data frame in the same read as its ACCEPT is not cut by the handshake limit", async () => {
  // A listener written by hand, so that ACCEPT and a large DATA frame leave in one write (a real one
  // sends its first data as soon as its ring forms, which can land in the dialler's same read).
  const frames: { kind: number; payload: Buffer }[] = [];
  let waiting: (() => void) | undefined;
  const server = createServer((socket) => {
    // A dialler that rejects the frames resets the connection: that is the test's failure, below.
    socket.on('error', () => undefined);
    let pending = Buffer.alloc(0);
    socket.on('data', (chunk: Buffer) => {
      pending = Buffer.concat([pending, chunk]);
      while (pending.length >= 13 && pending.length >= pending.readUInt32BE(0) + 4) {
        const end = pending.readUInt32BE(0) + 4;
        frames.push({ kind: pending.readUInt8(4), payload: pending.subarray(13, end) });
        pending = pending.subarray(end);
        waiting?.();
      }
    });
    void (async () => {
      const next = async () => {
        while (frames.length === 0) await new Promise<void>((resolve) => (waiting = resolve));
        return frames.shift() as { kind: number; payload: Buffer };
      };
      const hello = JSON.parse((await next()).payload.toString('utf8'));
      const challenge = 'ab'.repeat(16);
      socket.write(Buffer.concat(encodeFrame(FRAME_CHALLENGE, hello.generation, 0, Buffer.from(challenge))));
      await next(); // AUTH: its proof is not what this test is about
      const accept = encodeFrame(
        FRAME_ACCEPT,
        hello.generation,
        0,
        linkMac(TOKEN, 'listener', hello, challenge),
      );
      const data = encodeFrame(FRAME_DATA, hello.generation, 0, Buffer.alloc(100_000, 7));
      socket.write(Buffer.concat([...accept, ...data]));
    })();
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const address = server.address();
  const port = typeof address === 'object' && address !== null ? address.port : 0;
  try {
    const link = await dial(
      `127.0.0.1:${port}`,
      { job: 'job', generation: 2, fromRank: 1, toRank: 0, size: 2 },
      TOKEN,
      5000,
    );
    try {
      const frame = await link.receive(5000);
      assert.is(frame.kind, FRAME_DATA);
      assert.is(frame.payload.byteLength, 100_000);
    } finally {
      link.close();
    }
  } finally {
    server.close();
  }
});

test('a dialler without the world token is refused and counted; the members connect as before', async () => {
  const servers = await Promise.all([0, 1].map(() => CollectiveServer.listen('job', '127.0.0.1')));
  try {
    const [first, second] = servers as [CollectiveServer, CollectiveServer];
    first.authorize(3, TOKEN);
    // An outsider who knows the job, the generation and the ranks, but not the token.
    const outsider = await dial(
      first.address,
      { job: 'job', generation: 3, fromRank: 1, toRank: 0, size: 2 },
      'a-guessed-token-000000',
      400,
    ).catch((e: unknown) => e);
    assert.ok(outsider instanceof CollectiveError, `the outsider got a link: ${String(outsider)}`);
    assert.ok((first.drops.totals()['collective:bad token'] ?? 0) >= 1, JSON.stringify(first.drops.totals()));
    // Nor may a listener without the token pose as a neighbour: the dialler checks its ACCEPT.
    second.authorize(3, 'the-impostor-s-token-1');
    const posed = await dial(
      second.address,
      { job: 'job', generation: 3, fromRank: 0, toRank: 1, size: 2 },
      TOKEN,
      400,
    ).catch((e: unknown) => e);
    assert.ok(posed instanceof CollectiveError);
    const members = servers.map((server) => ({ address: server.address }));
    const groups = await Promise.all(
      servers.map((server, rank) =>
        RingGroup.connect({
          job: 'job',
          generation: 4,
          rank,
          members,
          server,
          token: TOKEN,
          timeoutMs: 5000,
        }),
      ),
    );
    const sums = await Promise.all(groups.map((g, rank) => g.allReduce(Float32Array.of(rank + 1, 10))));
    for (const sum of sums) assert.equal([...sum], [3, 20]);
    for (const g of groups) await g[Symbol.asyncDispose]();
  } finally {
    for (const s of servers) await s[Symbol.asyncDispose]();
  }
});

/** Seeded bytes: a fuzz case that fails can be replayed. */
function bytes(seed: number, length: number): Buffer {
  let x = seed >>> 0 || 1;
  return Buffer.from(
    Array.from({ length }, () => {
      x ^= x << 13;
      x ^= x >>> 17;
      x ^= x << 5;
      return (x >>> 0) & 0xff;
    }),
  );
}

function header(length: number, kind: number): Buffer {
  const h = Buffer.alloc(13);
  h.writeUInt32BE(length, 0);
  h.writeUInt8(kind, 4);
  return h;
}

test('garbage, oversized and malformed handshakes are dropped and counted, never fatal', async () => {
  const servers = await Promise.all([0, 1].map(() => CollectiveServer.listen('job', '127.0.0.1')));
  const target = servers[0] as CollectiveServer;
  const hello = (fields: object) => {
    const body = Buffer.from(JSON.stringify(fields));
    return Buffer.concat([...encodeFrame(FRAME_HELLO, 2, 0, body)]);
  };
  const cases: Buffer[] = [
    header(0xffff_fff0, FRAME_HELLO), // asks for 4 GiB
    header(64 * 1024 * 1024, FRAME_DATA), // a big tensor before any handshake
    header(2, FRAME_HELLO), // shorter than a header
    Buffer.concat([...encodeFrame(FRAME_DATA, 2, 0, Buffer.alloc(100))]), // data first
    Buffer.concat([...encodeFrame(FRAME_HELLO, 2, 0, Buffer.from('{not json'))]),
    hello({ job: 'job', generation: 2, fromRank: 1, toRank: 0, size: 2 }), // no nonce
    hello({ job: 'job', generation: 2, fromRank: -1, toRank: 0, size: 2, nonce: 'ab'.repeat(16) }),
    hello({ job: 'other', generation: 2, fromRank: 1, toRank: 0, size: 2, nonce: 'ab'.repeat(16) }),
    ...Array.from({ length: 40 }, (_, i) => bytes(i + 1, 1 + ((i * 97) % 3000))),
  ];
  try {
    for (const wire of cases) {
      const socket = connect(Number(target.address.split(':')[1]), '127.0.0.1');
      socket.on('error', () => undefined);
      socket.end(wire);
    }
    // Each case ends its connection with a drop; the random ones mostly as bad frames.
    await eventually(
      () => `every case counted, got ${JSON.stringify(target.drops.totals())}`,
      () => target.drops.total >= cases.length,
    );
    const totals = target.drops.totals();
    for (const reason of ['bad frame', 'malformed hello', 'another job', 'protocol'])
      assert.ok((totals[`collective:${reason}`] ?? 0) >= 1, `${reason} in ${JSON.stringify(totals)}`);
    const members = servers.map((server) => ({ address: server.address }));
    const groups = await Promise.all(
      servers.map((server, rank) =>
        RingGroup.connect({
          job: 'job',
          generation: 2,
          rank,
          members,
          server,
          token: TOKEN,
          timeoutMs: 5000,
        }),
      ),
    );
    const sums = await Promise.all(groups.map((g) => g.allReduce(Float32Array.of(1, 2))));
    for (const sum of sums) assert.equal([...sum], [2, 4]);
    for (const g of groups) await g[Symbol.asyncDispose]();
  } finally {
    for (const s of servers) await s[Symbol.asyncDispose]();
  }
});

test.run();
