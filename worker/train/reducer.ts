/**
 * The collective the training loop hands its gradients to: one fused Float32Array per step, already
 * weighted by b_i / B, summed element-wise across the ranks of the world. The elastic runtime
 * implements it as a ring all-reduce over TCP; a world of one worker needs no communication.
 * Compression strategies (communication/hooks.ts) are built on these two operations only.
 */

export interface ReduceOptions {
  /** 16-bit floats on the wire (sums in fp32). */
  readonly wire?: 'fp32' | 'fp16' | 'bf16';
}

export interface GradientReducer {
  /**
   * Sums `buffer` across every rank of the current world and resolves with the sum (possibly the
   * same array). Rejects, without touching the weights, when the world changes or a peer fails, so
   * the step can be retried in the new world.
   */
  allReduce(buffer: Float32Array, signal?: AbortSignal, options?: ReduceOptions): Promise<Float32Array>;
  /** Every rank's bytes, in rank order, on every rank (sparse gradients: each rank sends its own). */
  allGather(bytes: Uint8Array, signal?: AbortSignal): Promise<Uint8Array[]>;
}

/** The reducer of a world of one: the sum over one rank is its own buffer. */
export class LocalReducer implements GradientReducer {
  async allReduce(buffer: Float32Array, signal?: AbortSignal): Promise<Float32Array> {
    signal?.throwIfAborted();
    return buffer;
  }

  async allGather(bytes: Uint8Array, signal?: AbortSignal): Promise<Uint8Array[]> {
    signal?.throwIfAborted();
    return [bytes];
  }
}
