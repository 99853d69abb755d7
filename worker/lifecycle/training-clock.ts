/**
 * The worker's training time: what this session adds to the seconds its state already counted, and
 * the time its steps took (those that counted and those lost with a world).
 */
export class TrainingClock {
  private readonly started = performance.now();
  /** Training seconds the state had when this session started counting (rebased at each world). */
  private base = 0;
  stepSeconds = 0;
  lostStepSeconds = 0;
  sessionSamples = 0;

  /** A world's state arrived: its training seconds go on from what it says. */
  rebase(trainSeconds: number): void {
    this.base = trainSeconds - this.sessionSeconds();
  }

  trainSeconds(): number {
    return this.trainSecondsAt(this.sessionSeconds());
  }

  /** The training seconds when this session had run `sessionSeconds`. */
  trainSecondsAt(sessionSeconds: number): number {
    return this.base + sessionSeconds;
  }

  sessionSeconds(): number {
    return (performance.now() - this.started) / 1000;
  }
}
