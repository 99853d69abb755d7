/**
 * The collective the training loop hands its gradients to: one fused Float32Array per step, already
 * weighted by b_i / B, summed element-wise across the ranks of the world. The elastic runtime
 * implements it as a ring all-reduce over TCP; a world of one worker needs no communication.
 */

export interface GradientReducer {
  /**
   * Sums `buffer` across every rank of the current world and resolves with the sum (possibly the
   * same array). Rejects, without touching the weights, when the world changes or a peer fails, so
   * the step can be retried in the new world.
   */
  allReduce(buffer: Float32Array, signal?: AbortSignal): Promise<Float32Array>;
}

/** The reducer of a world of one: the sum over one rank is its own buffer. */
export class LocalReducer implements GradientReducer {
  async allReduce(buffer: Float32Array, signal?: AbortSignal): Promise<Float32Array> {
    signal?.throwIfAborted();
    return buffer;
  }
}
