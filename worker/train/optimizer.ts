/**
 * The optimizers of `spec.optimizer` (sgd, momentum, adam, rmsprop with the same update rules as
 * tfjs's; lars and lamb for large batches), with all state explicit: one slot variable per weight and role, named
 * `<weight>/<role>`, and an iteration count. Adam's bias corrections are computed from the count
 * (1 − β^t in float64), not accumulated in a float32 variable as tf.train.adam does, so a restored
 * optimizer continues bit for bit; the learning rate is an argument of every step. Updates agree with
 * tf.train.* to float32 rounding (test/unit/model-optimizer.test.ts).
 */
import * as tf from '@tensorflow/tfjs';
import type { OptimizerSpec } from '../../operator/api/training-job.ts';
import { FunctionGraph, functionsUnavailable, TensorflowFunction } from '../backend/tensorflow-function.ts';
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
  lars: ['momentum'],
  lamb: ['m', 'v'],
};

/** RMSProp's decay of the mean square (tfjs's default; the spec has no field for it). */
const RMSPROP_DECAY = 0.9;
/** LARS's η when the spec leaves it out (You et al. 2017 use 0.001). */
export const DEFAULT_TRUST_COEFFICIENT = 0.001;

/**
 * Biases and normalisation scales/offsets (every weight of rank ≤ 1) stay out of weight decay and of
 * the layer-wise trust ratio, as in You et al. and Goyal et al.: decaying them only hurts, and the
 * norm of a bias says nothing about a sensible step for it.
 */
export function layerAdapted(shape: readonly number[]): boolean {
  return shape.length > 1;
}

/**
 * The trust ratio of LARS and LAMB in plain numbers (the optimizer computes the same on tensors):
 * `coefficient · ‖w‖ / ‖u‖` for the update direction u, or 1 when either norm is 0, so a freshly
 * zeroed layer or a zero gradient still moves by the plain rule. LARS's ‖u‖ is ‖g‖ + β‖w‖ (β the
 * weight decay, its paper's denominator); LAMB's u is the Adam update plus βw.
 */
export function trustRatio(weightNorm: number, updateNorm: number, coefficient = 1): number {
  return weightNorm > 0 && updateNorm > 0 ? (coefficient * weightNorm) / updateNorm : 1;
}

interface StepScalars {
  readonly rate: tf.Scalar;
  readonly adamRate: tf.Scalar;
  readonly adamEpsilon: tf.Scalar;
  readonly lambM: tf.Scalar;
  readonly lambV: tf.Scalar;
  readonly decay: tf.Scalar;
}

type Constants = Record<
  | 'beta1'
  | 'oneMinusBeta1'
  | 'beta2'
  | 'oneMinusBeta2'
  | 'momentum'
  | 'decay'
  | 'oneMinusDecay'
  | 'epsilon'
  | 'weightDecay'
  | 'trust'
  | 'zero'
  | 'one',
  tf.Scalar
>;

export class TrainingOptimizer {
  private iterationCount = 0;
  /** slots[role][weight] */
  private readonly slots: tf.Variable[][];
  /** The hyper-parameters as scalars, made once: a scalar per op and weight costs more than the op. */
  private readonly constants: Constants;
  private readonly adapted: readonly boolean[];
  /** Adam's update as one TensorFlow function; null until first looked for, undefined when none. */
  private fused: TensorflowFunction | undefined | null = null;

  constructor(
    readonly spec: OptimizerSpec,
    private readonly weights: readonly TrainableWeight[],
    /** On the native backend, Adam's update of all weights as one function call (default). */
    private readonly fusedUpdate = true,
  ) {
    this.slots = ROLES[spec.type].map(() =>
      weights.map((w) => tf.tidy(() => tf.variable(tf.zerosLike(w.variable), false))),
    );
    this.adapted = weights.map((w) => layerAdapted(w.variable.shape));
    this.constants = {
      beta1: tf.scalar(spec.beta1),
      oneMinusBeta1: tf.scalar(1 - spec.beta1),
      beta2: tf.scalar(spec.beta2),
      oneMinusBeta2: tf.scalar(1 - spec.beta2),
      momentum: tf.scalar(spec.momentum),
      decay: tf.scalar(RMSPROP_DECAY),
      oneMinusDecay: tf.scalar(1 - RMSPROP_DECAY),
      epsilon: tf.scalar(spec.epsilon),
      weightDecay: tf.scalar(spec.weightDecay),
      trust: tf.scalar(spec.trustCoefficient ?? DEFAULT_TRUST_COEFFICIENT),
      zero: tf.scalar(0),
      one: tf.scalar(1),
    };
  }

  /** How `apply` updates: one TensorFlow function call (native backend, Adam) or op by op. */
  get updatePath(): 'function' | 'per-op' {
    return this.fusedAdam() === undefined ? 'per-op' : 'function';
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
    const fused = this.fusedAdam();
    if (fused !== undefined) {
      this.applyFusedAdam(fused, gradients, learningRate, t);
      this.iterationCount = t;
      return;
    }
    tf.tidy(() => {
      // Per-step scalars, shared by every weight. Adam folds its bias corrections into them
      // (Kingma & Ba, end of section 2): w −= lr·√(1−β2ᵗ)/(1−β1ᵗ) · m / (√v + ε·√(1−β2ᵗ)).
      // LAMB needs the corrected moments themselves, since its trust ratio is a norm of the update.
      const correction = Math.sqrt(1 - spec.beta2 ** t);
      const scalars: StepScalars = {
        rate: tf.scalar(learningRate),
        adamRate: tf.scalar((learningRate * correction) / (1 - spec.beta1 ** t)),
        adamEpsilon: tf.scalar(spec.epsilon * correction),
        lambM: tf.scalar(1 / (1 - spec.beta1 ** t)),
        lambV: tf.scalar(1 / (1 - spec.beta2 ** t)),
        decay: tf.scalar(learningRate * spec.weightDecay),
      };
      this.weights.forEach(({ variable }, i) => {
        this.update(variable, gradients[i] as tf.Tensor, i, scalars);
      });
    });
    this.iterationCount = t;
  }

  private update(variable: tf.Variable, gradient: tf.Tensor, i: number, s: StepScalars): void {
    const c = this.constants;
    const decays = this.spec.weightDecay > 0 && this.adapted[i] === true;
    // Coupled L2 (the gradient of β/2·‖w‖²) for the SGD family; Adam's is decoupled below (AdamW).
    const coupled = (g: tf.Tensor) => (decays ? tf.add(g, tf.mul(variable, c.weightDecay)) : g);
    switch (this.spec.type) {
      case 'sgd':
        variable.assign(tf.sub(variable, tf.mul(coupled(gradient), s.rate)));
        break;
      case 'momentum': {
        const accumulation = this.slot(0, i);
        const next = tf.add(tf.mul(accumulation, c.momentum), coupled(gradient));
        accumulation.assign(next);
        variable.assign(tf.sub(variable, tf.mul(next, s.rate)));
        break;
      }
      case 'adam': {
        const [nextM, nextV] = this.adamMoments(gradient, i);
        const step = tf.div(tf.mul(nextM, s.adamRate), tf.add(tf.sqrt(nextV), s.adamEpsilon));
        // AdamW (Loshchilov & Hutter): the decay scales with the rate but not with Adam's normalisation.
        const decayed = decays ? tf.add(step, tf.mul(variable, s.decay)) : step;
        variable.assign(tf.sub(variable, decayed));
        break;
      }
      case 'rmsprop': {
        const g = coupled(gradient);
        const ms = this.slot(0, i);
        const mom = this.slot(1, i);
        const nextMs = tf.add(tf.mul(ms, c.decay), tf.mul(tf.square(g), c.oneMinusDecay));
        const nextMom = tf.add(
          tf.mul(mom, c.momentum),
          tf.div(tf.mul(g, s.rate), tf.sqrt(tf.add(nextMs, c.epsilon))),
        );
        ms.assign(nextMs);
        mom.assign(nextMom);
        variable.assign(tf.sub(variable, nextMom));
        break;
      }
      case 'lars':
        this.lars(variable, gradient, i, s);
        break;
      case 'lamb':
        this.lamb(variable, gradient, i, s);
        break;
    }
  }

  /**
   * Adam on the native backend: every weight's update as ONE TensorFlow function (the same ops in the
   * same order as `update`, so the same rule and rounding), instead of ten eager ops per weight.
   * Undefined elsewhere, for the other optimizers, or when `fusedUpdate` is false.
   */
  private fusedAdam(): TensorflowFunction | undefined {
    if (this.fused !== null) return this.fused;
    this.fused = undefined;
    if (this.spec.type !== 'adam' || !this.fusedUpdate || functionsUnavailable() !== undefined)
      return undefined;
    const g = new FunctionGraph('tensile_adam');
    const T = { T: { type: 'float32' } } as const;
    const names = ['beta1', 'oneMinusBeta1', 'beta2', 'oneMinusBeta2', 'rate', 'epsilon', 'decay'] as const;
    const [beta1, oneMinusBeta1, beta2, oneMinusBeta2, rate, epsilon, decay] = names.map((n) =>
      g.input(n),
    ) as [string, string, string, string, string, string, string];
    const mul = (a: string, b: string) => g.op1('Mul', [a, b], T);
    const add = (a: string, b: string) => g.op1('AddV2', [a, b], T);
    this.weights.forEach((_, i) => {
      const [w, m, v, grad] = ['w', 'm', 'v', 'g'].map((n) => g.input(`${n}${i}`)) as [
        string,
        string,
        string,
        string,
      ];
      const nextM = add(mul(m, beta1), mul(grad, oneMinusBeta1));
      const nextV = add(mul(v, beta2), mul(g.op1('Square', [grad], T), oneMinusBeta2));
      const step = g.op1('RealDiv', [mul(nextM, rate), add(g.op1('Sqrt', [nextV], T), epsilon)], T);
      const decays = this.spec.weightDecay > 0 && this.adapted[i] === true;
      g.output(`w${i}`, g.op1('Sub', [w, decays ? add(step, mul(w, decay)) : step], T));
      g.output(`m${i}`, nextM);
      g.output(`v${i}`, nextV);
    });
    try {
      this.fused = TensorflowFunction.register(g);
    } catch {
      this.fused = undefined;
    }
    return this.fused;
  }

  private applyFusedAdam(
    fn: TensorflowFunction,
    gradients: readonly tf.Tensor[],
    learningRate: number,
    t: number,
  ): void {
    const { spec } = this;
    const correction = Math.sqrt(1 - spec.beta2 ** t);
    const c = this.constants;
    tf.tidy(() => {
      const inputs: tf.Tensor[] = [
        c.beta1,
        c.oneMinusBeta1,
        c.beta2,
        c.oneMinusBeta2,
        tf.scalar((learningRate * correction) / (1 - spec.beta1 ** t)),
        tf.scalar(spec.epsilon * correction),
        tf.scalar(learningRate * spec.weightDecay),
      ];
      this.weights.forEach(({ variable }, i) => {
        inputs.push(variable, this.slot(0, i), this.slot(1, i), gradients[i] as tf.Tensor);
      });
      const outputs = fn.call(inputs);
      this.weights.forEach(({ variable }, i) => {
        variable.assign(outputs[3 * i] as tf.Tensor);
        this.slot(0, i).assign(outputs[3 * i + 1] as tf.Tensor);
        this.slot(1, i).assign(outputs[3 * i + 2] as tf.Tensor);
      });
    });
  }

  /** `coefficient·‖w‖/denominator` as a tensor, 1 when either norm is 0 (see trustRatio). */
  private ratio(weightNorm: tf.Tensor, denominator: tf.Tensor, coefficient: tf.Scalar): tf.Tensor {
    const c = this.constants;
    const usable = tf.logicalAnd(tf.greater(weightNorm, c.zero), tf.greater(denominator, c.zero));
    const safe = tf.where(usable, denominator, c.one);
    return tf.where(usable, tf.div(tf.mul(weightNorm, coefficient), safe), c.one);
  }

  /** LARS (You et al. 2017, algorithm 1): v ← m·v + λ·(g + βw), λ = η‖w‖/(‖g‖ + β‖w‖); w ← w − lr·v. */
  private lars(variable: tf.Variable, gradient: tf.Tensor, i: number, s: StepScalars): void {
    const c = this.constants;
    const velocity = this.slot(0, i);
    let direction = gradient;
    if (this.adapted[i] === true) {
      const weightNorm = tf.norm(variable);
      const denominator = tf.add(tf.norm(gradient), tf.mul(weightNorm, c.weightDecay));
      direction = tf.mul(
        tf.add(gradient, tf.mul(variable, c.weightDecay)),
        this.ratio(weightNorm, denominator, c.trust),
      );
    }
    const next = tf.add(tf.mul(velocity, c.momentum), direction);
    velocity.assign(next);
    variable.assign(tf.sub(variable, tf.mul(next, s.rate)));
  }

  /** Adam's first and second moments of variable `i` after `gradient`, stored in its slots. */
  private adamMoments(gradient: tf.Tensor, i: number): [tf.Tensor, tf.Tensor] {
    const c = this.constants;
    const m = this.slot(0, i);
    const v = this.slot(1, i);
    const nextM = tf.add(tf.mul(m, c.beta1), tf.mul(gradient, c.oneMinusBeta1));
    const nextV = tf.add(tf.mul(v, c.beta2), tf.mul(tf.square(gradient), c.oneMinusBeta2));
    m.assign(nextM);
    v.assign(nextV);
    return [nextM, nextV];
  }

  /** LAMB (You et al. 2020, algorithm 2): u = m̂/(√v̂ + ε) + βw; w ← w − lr·‖w‖/‖u‖·u. */
  private lamb(variable: tf.Variable, gradient: tf.Tensor, i: number, s: StepScalars): void {
    const c = this.constants;
    const [nextM, nextV] = this.adamMoments(gradient, i);
    let update = tf.div(tf.mul(nextM, s.lambM), tf.add(tf.sqrt(tf.mul(nextV, s.lambV)), c.epsilon));
    if (this.adapted[i] === true) {
      update = tf.add(update, tf.mul(variable, c.weightDecay));
      update = tf.mul(update, this.ratio(tf.norm(variable), tf.norm(update), c.one));
    }
    variable.assign(tf.sub(variable, tf.mul(update, s.rate)));
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
