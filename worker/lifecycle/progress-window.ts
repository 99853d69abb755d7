/**
 * The steps since the last progress report: their mean loss and accuracy and their throughput, for
 * the `progress` event and the operator's progress message. Pure but for the times it is given.
 */

export interface StepFigures {
  readonly samples: number;
  readonly loss: number;
  readonly accuracy: number;
}

export interface WindowReport {
  readonly loss: number;
  readonly accuracy: number;
  /** Rounded to a tenth. */
  readonly samplesPerSecond: number;
}

export class ProgressWindow {
  private start: number;
  private samples = 0;
  private loss = 0;
  private accuracy = 0;
  private steps = 0;

  constructor(now: number) {
    this.start = now;
  }

  add(step: StepFigures): void {
    this.samples += step.samples;
    this.loss += step.loss;
    this.accuracy += step.accuracy;
    this.steps++;
  }

  /**
   * A report is due every `intervalMs`, and at once when training ends or an evaluation just ran
   * (`now` is its last step): the last figures before either must not wait for the interval.
   */
  due(now: number, intervalMs: number, atOnce: boolean): boolean {
    return this.steps > 0 && (atOnce || now - this.start >= intervalMs);
  }

  /** The window's figures; the next window starts at `now`. */
  take(now: number): WindowReport {
    const millis = now - this.start;
    const report = {
      loss: this.loss / this.steps,
      accuracy: this.accuracy / this.steps,
      samplesPerSecond: millis > 0 ? Math.round((this.samples / millis) * 1000 * 10) / 10 : 0,
    };
    this.start = now;
    this.samples = 0;
    this.loss = 0;
    this.accuracy = 0;
    this.steps = 0;
    return report;
  }
}
