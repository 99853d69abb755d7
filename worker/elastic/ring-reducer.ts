/** The GradientReducer of a world: its RingGroup's all-reduce, and an all-gather made of its broadcasts. */
import type { RingGroup } from '../collective/group.ts';
import { CollectiveError } from '../collective/transport.ts';
import type { GradientReducer } from '../train/reducer.ts';

export function ringReducer(ring: RingGroup): GradientReducer {
  return {
    allReduce: (buffer, signal, options) => {
      if (signal?.aborted) return Promise.reject(new CollectiveError('world changed'));
      return ring.allReduce(buffer, { fp16: options?.wire === 'fp16', bf16: options?.wire === 'bf16' });
    },
    allGather: async (bytes, signal) => {
      // One ring broadcast per root, in rank order: the collective's own primitive, unchanged.
      const out: Uint8Array[] = [];
      for (let root = 0; root < ring.size; root++) {
        if (signal?.aborted) throw new CollectiveError('world changed');
        out.push(await ring.broadcast(root === ring.rank ? bytes : undefined, root));
      }
      return out;
    },
  };
}
