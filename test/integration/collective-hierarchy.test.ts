/**
 * Hierarchical all-reduce over real TCP rings on loopback: the same sum as the flat ring of the same
 * processes, identical bits on every rank, and fewer bytes on the links between nodes.
 */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { RingGroup } from '../../worker/collective/group.ts';
import { CollectiveServer } from '../../worker/collective/transport.ts';

const TOKEN = 'the-world-link-token-h';

async function ring(
  nodes: readonly string[],
  generation: number,
  hierarchical: boolean,
  servers: CollectiveServer[],
) {
  const members = servers.map((s, i) => ({ address: s.address, node: nodes[i] }));
  return Promise.all(
    servers.map((server, rank) =>
      RingGroup.connect({
        job: 'job',
        generation,
        rank,
        members,
        server,
        token: TOKEN,
        timeoutMs: 5000,
        hierarchical,
      }),
    ),
  );
}

/** Integers below 2^10: every order of summation gives the exact sum, so flat and hierarchical agree bit for bit. */
function integers(length: number, seed: number): Float32Array {
  let x = seed;
  return Float32Array.from({ length }, () => {
    x = (x * 1103515245 + 12345) % 2147483648;
    return (x % 2048) - 1024;
  });
}

for (const nodes of [
  ['a', 'a', 'b', 'b'],
  ['a', 'a', 'a', 'b', 'c'],
  ['a', 'b', 'b'],
]) {
  test(`nodes ${nodes.join(',')}: hierarchical gives the flat ring's sum on every rank`, async () => {
    const servers = await Promise.all(nodes.map(() => CollectiveServer.listen('job', '127.0.0.1')));
    try {
      const length = 300_001;
      const inputs = nodes.map((_, i) => integers(length, i + 7));
      const flat = await ring(nodes, 1, false, servers);
      const flatSums = await Promise.all(
        flat.map((g, i) => g.allReduce(Float32Array.from(inputs[i] as Float32Array))),
      );
      const flatCross = flat.reduce(
        (n, g, i) => n + (nodes[i] !== nodes[(i + 1) % nodes.length] ? g.bytesSent : 0),
        0,
      );
      for (const g of flat) await g[Symbol.asyncDispose]();
      const hier = await ring(nodes, 2, true, servers);
      assert.ok(
        hier.every((g) => g.hierarchy !== undefined),
        'the ring went hierarchical',
      );
      // Twice: the second all-reduce on the same links starts from the seqs the first left.
      for (let round = 0; round < 2; round++) {
        const sums = await Promise.all(
          hier.map((g, i) => g.allReduce(Float32Array.from(inputs[i] as Float32Array))),
        );
        for (const sum of sums)
          assert.equal(Buffer.from(sum.buffer), Buffer.from((flatSums[0] as Float32Array).buffer));
      }
      const hierCross = hier.reduce(
        (n, g, i) => n + (nodes[i] !== nodes[(i + 1) % nodes.length] ? g.bytesSent : 0),
        0,
      );
      // Bytes sent to the right neighbour by the rank before each node boundary (2 all-reduces against 1).
      assert.ok(
        hierCross / 2 < flatCross,
        `between nodes: ${hierCross / 2} B per all-reduce against ${flatCross}`,
      );
      for (const g of hier) await g[Symbol.asyncDispose]();
    } finally {
      for (const s of servers) await s[Symbol.asyncDispose]();
    }
  });
}

test.run();
