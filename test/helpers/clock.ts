/**
 * A clock a test can stop: `now()` follows the wall clock until `pause()`, stands still until
 * `resume()`, then goes on from where it stood (no jump). Code that reads its time from it sees no time
 * pass while paused, however long the machine takes, so "nothing happens before the timeout" is
 * checked without racing the timeout.
 */
export class PausableClock {
  private offset = 0;
  private pausedAt: number | undefined;

  readonly now = (): number => this.pausedAt ?? Date.now() - this.offset;

  pause(): void {
    this.pausedAt ??= this.now();
  }

  resume(): void {
    if (this.pausedAt === undefined) return;
    this.offset = Date.now() - this.pausedAt;
    this.pausedAt = undefined;
  }
}
