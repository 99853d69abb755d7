/**
 * The optimizers of `spec.optimizer` (sgd, momentum, adam, rmsprop), with the same update rules as
 * tfjs's, but with all state explicit: one slot variable per weight and role, named
 * `<weight>/<role>`, and an iteration count. Adam's bias corrections are computed from the count
 * (1 − β^t in float64), not accumulated in a float32 variable as tf.train.adam does, so a restored
 * optimizer continues bit for bit; the learning rate is an argument of every step. Updates agree with
 * tf.train.* to float32 rounding (test/unit/model-optimizer.test.ts).
 */
import * as tf from '@tensorflow/tfjs';
import type { OptimizerSpec } from '../../operator/api/training-job.ts';
import { fuseTensors, type OptimizerSnapshot, valuesOf } from './snapshot.ts';

export interface TrainableWeight {
  readonly name: string;
  readonly variable: tf.Variable;
}

const ROLES: Record<OptimizerSpec['type'], readonly string[]> = {
  sgd: [],
  momentum: ['momentum'],
  adam: ['m', 'v'],
  rmsprop: ['ms', 'mom'],
};

/** RMSProp's decay of the mean square (tfjs's default; the spec has no field for it). */
const RMSPROP_DECAY = 0.9;

export class TrainingOptimizer {
  private iterationCount = 0;
  /** slots[role][weight] */
  private readonly slots: tf.Variable[][];
  /** The hyper-parameters as scalars, made once: a scalar per op and weight costs more than the op. */
  private readonly constants: Record<
    | 'beta1'
    | 'oneMinusBeta1'
    | 'beta2'
    | 'oneMinusBeta2'
    | 'momentum'
    | 'decay'
    | 'oneMinusDecay'
    | 'epsilon',
    tf.Scalar
  >;

  constructor(
    readonly spec: OptimizerSpec,
    private readonly weights: readonly TrainableWeight[],
  ) {
    this.slots = ROLES[spec.type].map(() =>
      weights.map((w) => tf.tidy(() => tf.variable(tf.zerosLike(w.variable), false))),
    );
    this.constants = {
      beta1: tf.scalar(spec.beta1),
      oneMinusBeta1: tf.scalar(1 - spec.beta1),
      beta2: tf.scalar(spec.beta2),
      oneMinusBeta2: tf.scalar(1 - spec.beta2),
      momentum: tf.scalar(spec.momentum),
      decay: tf.scalar(RMSPROP_DECAY),
      oneMinusDecay: tf.scalar(1 - RMSPROP_DECAY),
      epsilon: tf.scalar(spec.epsilon),
    };
  }

  get iterations(): number {
    return this.iterationCount;
  }

  /** One update with `gradients` (in weight order) at `learningRate`. */
  apply(gradients: readonly tf.Tensor[], learningRate: number): void {
    if (gradients.length !== this.weights.length)
      throw new Error(`expected ${this.weights.length} gradients, got ${gradients.length}`);
    const t = this.iterationCount + 1;
    const { spec } = this;
    const c = this.constants;
    tf.tidy(() => {
      // Per-step scalars, shared by every weight. Adam folds its bias corrections into them
      // (Kingma & Ba, end of section 2): w −= lr·√(1−β2ᵗ)/(1−β1ᵗ) · m / (√v + ε·√(1−β2ᵗ)).
      const rate = tf.scalar(learningRate);
      const correction = Math.sqrt(1 - spec.beta2 ** t);
      const adamRate = tf.scalar((learningRate * correction) / (1 - spec.beta1 ** t));
      const adamEpsilon = tf.scalar(spec.epsilon * correction);
      this.weights.forEach(({ variable }, i) => {
        const g = gradients[i] as tf.Tensor;
        switch (spec.type) {
          case 'sgd':
            variable.assign(tf.sub(variable, tf.mul(g, rate)));
            break;
          case 'momentum': {
            const accumulation = this.slot(0, i);
            const next = tf.add(tf.mul(accumulation, c.momentum), g);
            accumulation.assign(next);
            variable.assign(tf.sub(variable, tf.mul(next, rate)));
            break;
          }
          case 'adam': {
            const m = this.slot(0, i);
            const v = this.slot(1, i);
            const nextM = tf.add(tf.mul(m, c.beta1), tf.mul(g, c.oneMinusBeta1));
            const nextV = tf.add(tf.mul(v, c.beta2), tf.mul(tf.square(g), c.oneMinusBeta2));
            m.assign(nextM);
            v.assign(nextV);
            const step = tf.div(tf.mul(nextM, adamRate), tf.add(tf.sqrt(nextV), adamEpsilon));
            variable.assign(tf.sub(variable, step));
            break;
          }
          case 'rmsprop': {
            const ms = this.slot(0, i);
            const mom = this.slot(1, i);
            const nextMs = tf.add(tf.mul(ms, c.decay), tf.mul(tf.square(g), c.oneMinusDecay));
            const nextMom = tf.add(
              tf.mul(mom, c.momentum),
              tf.div(tf.mul(g, rate), tf.sqrt(tf.add(nextMs, c.epsilon))),
            );
            ms.assign(nextMs);
            mom.assign(nextMom);
            variable.assign(tf.sub(variable, nextMom));
            break;
          }
        }
      });
    });
    this.iterationCount = t;
  }

  private slot(role: number, weight: number): tf.Variable {
    const slot = this.slots[role]?.[weight];
    if (slot === undefined) throw new Error(`no optimizer slot ${role}/${weight}`);
    return slot;
  }

  /** Copies the state to host memory (one fused buffer). */
  snapshot(): OptimizerSnapshot {
    const named = ROLES[this.spec.type].flatMap((role, r) =>
      this.weights.map((w, i) => ({ name: `${w.name}/${role}`, tensor: this.slot(r, i) as tf.Tensor })),
    );
    return { type: this.spec.type, iterations: this.iterationCount, slots: fuseTensors(named) };
  }

  /** Restores a snapshot of an optimizer of the same type over the same weights; slots are matched by name. */
  restore(state: OptimizerSnapshot): void {
    if (state.type !== this.spec.type)
      throw new Error(`optimizer state is for ${state.type}, this optimizer is ${this.spec.type}`);
    const byName = new Map(state.slots.specs.map((s) => [s.name, s]));
    ROLES[this.spec.type].forEach((role, r) => {
      this.weights.forEach((w, i) => {
        const saved = byName.get(`${w.name}/${role}`);
        const variable = this.slot(r, i);
        if (saved === undefined) throw new Error(`optimizer state has no slot ${w.name}/${role}`);
        if (saved.shape.join(',') !== variable.shape.join(','))
          throw new Error(
            `optimizer slot ${saved.name} has shape [${saved.shape}], expected [${variable.shape}]`,
          );
        tf.tidy(() => variable.assign(tf.tensor(valuesOf(state.slots, saved).slice(), variable.shape)));
      });
    });
    this.iterationCount = state.iterations;
  }

  dispose(): void {
    for (const role of this.slots) for (const v of role) v.dispose();
    tf.dispose(Object.values(this.constants));
  }
}
