/**
 * The forward and backward pass of a micro-batch as ONE TensorFlow function on the native backend
 * (worker/backend/tensorflow-function.ts): weights, inputs, labels and dropout masks in; every
 * weight's gradient, the scaled loss and the correct count out. The per-op path (tf.variableGrads)
 * dispatches some fifty eager ops a step, each with its JS bookkeeping; here the step is one call.
 *
 * Written for the layers the built-in models use, with the gradients written out from TensorFlow's
 * grad ops: Dense and Conv2D (relu or linear, bias or none), MaxPooling2D, Flatten, Reshape, Dropout
 * (the masks are the per-op path's: same seeds, same mulberry32 stream, passed in), and a softmax
 * output whose loss is the cross-entropy from the logits. Anything else (batch normalization, other
 * activations, regularizers, frozen layers, custom topologies beyond these) keeps the per-op path,
 * with the reason. The two paths agree to float rounding (test/unit/native-step.test.ts); the
 * per-op loss clips probabilities at 1e-7, the function's is exact, so they differ only where a
 * prediction is that confident. Each path is deterministic on its own, so a resumed run that takes
 * the same path continues bit for bit.
 */
import * as tf from '@tensorflow/tfjs';
import {
  type Attr,
  FunctionGraph,
  functionsUnavailable,
  TensorflowFunction,
} from '../backend/tensorflow-function.ts';
import { dropoutMask } from '../model/build.ts';

const F32: Attr = { type: 'float32' };
const I32: Attr = { type: 'int32' };

type Config = Record<string, unknown>;

interface Built {
  readonly graph: FunctionGraph;
  /** Dropout rate of each mask input, in input order. */
  readonly dropoutRates: number[];
  /** Per dropout mask: the sample shape it covers (the batch is prepended). */
  readonly maskShapes: number[][];
}

/** What a layer's backward pass needs of its forward pass. */
interface Recorded {
  readonly backward: (gradient: string, needInput: boolean) => string | undefined;
}

const sampleShape = (layer: tf.layers.Layer, which: 'input' | 'output'): number[] => {
  const shape = (which === 'input' ? layer.inputSpec?.[0]?.shape : undefined) ?? undefined;
  if (shape !== undefined) return shape.slice(1).map(Number);
  const out = which === 'input' ? layer.input : layer.output;
  const s = (Array.isArray(out) ? out[0] : out)?.shape;
  if (s === undefined) throw new Error(`layer ${layer.name} has no ${which} shape`);
  return s.slice(1).map((d) => Number(d));
};

/** The step's graph builder: one method per layer kind, each recording its backward pass. */
class StepGraph {
  readonly g: FunctionGraph;
  readonly recorded: Recorded[] = [];
  readonly dropoutRates: number[] = [];
  readonly maskShapes: number[][] = [];
  /** The gradient output of each variable, by its index among the trainable weights. */
  readonly gradients = new Map<number, string>();

  constructor(
    name: string,
    private readonly weights: readonly string[],
  ) {
    this.g = new FunctionGraph(name);
  }

  shapeOf(ref: string): string {
    return this.g.op1('Shape', [ref], { T: F32, out_type: I32 });
  }

  const(values: readonly number[], scalar = false): string {
    return this.g.op1('Const', [], { dtype: I32, value: { int32Tensor: values, scalar } });
  }

  activation(z: string, activation: string): string {
    if (activation !== 'relu') return z;
    const a = this.g.op1('Relu', [z], { T: F32 });
    this.recorded.push({ backward: (d) => this.g.op1('ReluGrad', [d, a], { T: F32 }) });
    return a;
  }

  bias(z: string, bias: number | undefined): string {
    if (bias === undefined) return z;
    const b = this.weights[bias] as string;
    const out = this.g.op1('BiasAdd', [z, b], { T: F32, data_format: { s: 'NHWC' } });
    this.recorded.push({
      backward: (d) => {
        this.gradients.set(bias, this.g.op1('BiasAddGrad', [d], { T: F32, data_format: { s: 'NHWC' } }));
        return d;
      },
    });
    return out;
  }

  dense(h: string, kernel: number, bias: number | undefined, activation: string): string {
    const w = this.weights[kernel] as string;
    const mm = (a: string, b: string, ta: boolean, tb: boolean) =>
      this.g.op1('MatMul', [a, b], { T: F32, transpose_a: { b: ta }, transpose_b: { b: tb } });
    const z = mm(h, w, false, false);
    this.recorded.push({
      backward: (d, needInput) => {
        this.gradients.set(kernel, mm(h, d, true, false));
        return needInput ? mm(d, w, false, true) : undefined;
      },
    });
    return this.activation(this.bias(z, bias), activation);
  }

  conv2d(h: string, kernel: number, bias: number | undefined, config: Config, kernelShape: number[]): string {
    const k = this.weights[kernel] as string;
    const strides = config['strides'] as number[];
    const attrs = {
      T: F32,
      strides: { ints: [1, strides[0] as number, strides[1] as number, 1] },
      use_cudnn_on_gpu: { b: true },
      padding: { s: String(config['padding']).toUpperCase() },
      explicit_paddings: { ints: [] },
      data_format: { s: 'NHWC' },
      dilations: { ints: [1, 1, 1, 1] },
    };
    const z = this.g.op1('Conv2D', [h, k], attrs);
    this.recorded.push({
      backward: (d, needInput) => {
        this.gradients.set(
          kernel,
          this.g.op1('Conv2DBackpropFilter', [h, this.const(kernelShape), d], attrs),
        );
        return needInput ? this.g.op1('Conv2DBackpropInput', [this.shapeOf(h), k, d], attrs) : undefined;
      },
    });
    return this.activation(this.bias(z, bias), String(config['activation']));
  }

  maxPool(h: string, config: Config): string {
    const pool = config['poolSize'] as number[];
    const strides = (config['strides'] as number[] | null) ?? pool;
    const attrs = {
      T: F32,
      ksize: { ints: [1, pool[0] as number, pool[1] as number, 1] },
      strides: { ints: [1, strides[0] as number, strides[1] as number, 1] },
      padding: { s: String(config['padding']).toUpperCase() },
      data_format: { s: 'NHWC' },
    };
    const out = this.g.op1('MaxPool', [h], attrs);
    this.recorded.push({ backward: (d) => this.g.op1('MaxPoolGrad', [h, out, d], attrs) });
    return out;
  }

  reshape(h: string, shape: readonly number[]): string {
    const out = this.g.op1('Reshape', [h, this.const([-1, ...shape])], { T: F32, Tshape: I32 });
    this.recorded.push({
      backward: (d) => this.g.op1('Reshape', [d, this.shapeOf(h)], { T: F32, Tshape: I32 }),
    });
    return out;
  }

  dropout(h: string, rate: number, shape: number[]): string {
    const mask = this.g.input(`mask${this.dropoutRates.length}`);
    this.dropoutRates.push(rate);
    this.maskShapes.push(shape);
    this.recorded.push({ backward: (d) => this.g.op1('Mul', [d, mask], { T: F32 }) });
    return this.g.op1('Mul', [h, mask], { T: F32 });
  }
}

/** Why a layer keeps the per-op path, or undefined when the function covers it. */
function unsupported(layer: tf.layers.Layer, last: boolean): string | undefined {
  const kind = layer.getClassName();
  const config = layer.getConfig() as Config;
  if (!layer.trainable && layer.weights.length > 0) return `layer ${layer.name} is frozen`;
  for (const key of [
    'kernelRegularizer',
    'biasRegularizer',
    'activityRegularizer',
    'kernelConstraint',
    'biasConstraint',
  ])
    if (config[key] !== undefined && config[key] !== null) return `layer ${layer.name} has a ${key}`;
  const activation = String(config['activation'] ?? 'linear');
  if (kind === 'Dense' || kind === 'Conv2D') {
    if (last ? activation !== 'softmax' : activation !== 'relu' && activation !== 'linear')
      return `layer ${layer.name}: activation ${activation} (the function path has relu and linear, softmax last)`;
    if (kind === 'Conv2D') {
      const dilation = config['dilationRate'] as number[] | number;
      if ([dilation].flat().some((d) => d !== 1)) return `layer ${layer.name} is dilated`;
      if (config['dataFormat'] !== 'channelsLast') return `layer ${layer.name} is not channels-last`;
    }
    return undefined;
  }
  if (last) return `the last layer is ${kind}, not a softmax Dense`;
  if (kind === 'MaxPooling2D')
    return config['dataFormat'] === 'channelsLast' ? undefined : `layer ${layer.name} is not channels-last`;
  if (kind === 'Dropout')
    return config['noiseShape'] === null || config['noiseShape'] === undefined
      ? undefined
      : `layer ${layer.name} has a noise shape`;
  if (kind === 'Flatten' || kind === 'Reshape') return undefined;
  return `layer ${layer.name} is a ${kind}`;
}

function build(model: tf.LayersModel, name: string): Built | string {
  const trainable = model.trainableWeights;
  if (model.nonTrainableWeights.length > 0) return 'the model has non-trainable weights';
  if (!(model instanceof tf.Sequential)) return 'the model is not sequential';
  const layers = model.layers;
  for (const [i, layer] of layers.entries()) {
    const reason = unsupported(layer, i === layers.length - 1);
    if (reason !== undefined) return reason;
  }
  const step = new StepGraph(
    name,
    trainable.map((_, i) => `w${i}`),
  );
  const g = step.g;
  let h = g.input('x');
  const labels = g.input('labels', 'int32');
  const scale = g.input('scale');
  for (let i = 0; i < trainable.length; i++) g.input(`w${i}`);
  const indexOf = (layer: tf.layers.Layer, j: number) => {
    const w = layer.trainableWeights[j];
    return w === undefined ? undefined : trainable.indexOf(w);
  };
  for (const [i, layer] of layers.entries()) {
    const config = layer.getConfig() as Config;
    const last = i === layers.length - 1;
    const activation = last ? 'linear' : String(config['activation'] ?? 'linear');
    switch (layer.getClassName()) {
      case 'Dense':
        h = step.dense(h, indexOf(layer, 0) as number, indexOf(layer, 1), activation);
        break;
      case 'Conv2D':
        h = step.conv2d(h, indexOf(layer, 0) as number, indexOf(layer, 1), { ...config, activation }, [
          ...((layer.trainableWeights[0]?.shape ?? []) as number[]),
        ]);
        break;
      case 'MaxPooling2D':
        h = step.maxPool(h, config);
        break;
      case 'Flatten':
      case 'Reshape':
        h = step.reshape(h, sampleShape(layer, 'output'));
        break;
      case 'Dropout':
        h = step.dropout(h, Number(config['rate']), sampleShape(layer, 'output'));
        break;
    }
  }
  const [losses, backprop] = g.op('SparseSoftmaxCrossEntropyWithLogits', [h, labels], {
    T: F32,
    Tlabels: I32,
  }) as [string, string];
  const axis0 = step.const([0]);
  const sum = (ref: string) => g.op1('Sum', [ref, axis0], { T: F32, Tidx: I32, keep_dims: { b: false } });
  const loss = g.op1('Mul', [sum(losses), scale], { T: F32 });
  const predicted = g.op1('ArgMax', [h, step.const([1], true)], { T: F32, Tidx: I32, output_type: I32 });
  const hits = g.op1('Equal', [predicted, labels], { T: I32, incompatible_shape_error: { b: true } });
  const correct = sum(g.op1('Cast', [hits], { SrcT: { type: 'bool' }, DstT: F32, Truncate: { b: false } }));
  let d: string | undefined = g.op1('Mul', [backprop, scale], { T: F32 });
  // Backwards through the recorded passes; the input's own gradient is never needed.
  for (let r = step.recorded.length - 1; r >= 0 && d !== undefined; r--)
    d = (step.recorded[r] as Recorded).backward(d, r > 0);
  for (let i = 0; i < trainable.length; i++) {
    const gradient = step.gradients.get(i);
    if (gradient === undefined) return `no gradient for weight ${trainable[i]?.originalName}`;
    g.output(`g${i}`, gradient);
  }
  g.output('loss', loss);
  g.output('correct', correct);
  return { graph: g, dropoutRates: step.dropoutRates, maskShapes: step.maskShapes };
}

export interface MicroBatchGradients {
  /** One per trainable weight, in the model's order. */
  readonly gradients: tf.Tensor[];
  /** Σ loss · scale. */
  readonly loss: tf.Scalar;
  readonly correct: tf.Scalar;
}

/** A model's forward and backward pass as one registered function. */
export class NativeStep {
  private constructor(
    private readonly fn: TensorflowFunction,
    private readonly built: Built,
    private readonly variables: readonly tf.Variable[],
  ) {}

  /** The step for `model`, or why it keeps the per-op path. */
  static for(model: tf.LayersModel, variables: readonly tf.Variable[]): NativeStep | string {
    const unavailable = functionsUnavailable();
    if (unavailable !== undefined) return unavailable;
    const built = build(model, `tensile_step_${model.name.replace(/[^A-Za-z0-9_]/g, '_')}`);
    if (typeof built === 'string') return built;
    try {
      return new NativeStep(TensorflowFunction.register(built.graph), built, variables);
    } catch (error) {
      return `TensorFlow refused the step function: ${(error as Error).message}`;
    }
  }

  /**
   * Gradients of Σ loss · scale for x [n, ...] and labels y [n]; `maskSeeds` are the dropout layers'
   * seeds (seedDropout's), in layer order. The caller disposes the outputs.
   */
  run(x: tf.Tensor, y: tf.Tensor, scale: number, maskSeeds: readonly number[]): MicroBatchGradients {
    const n = x.shape[0] as number;
    return tf.tidy(() => {
      const masks = this.built.dropoutRates.map((rate, i) =>
        dropoutMask([n, ...(this.built.maskShapes[i] as number[])], rate, maskSeeds[i] ?? 0),
      );
      const outputs = this.fn.call([x, y, tf.scalar(scale), ...this.variables, ...masks]);
      const k = this.variables.length;
      return {
        gradients: outputs.slice(0, k),
        loss: outputs[k] as tf.Scalar,
        correct: outputs[k + 1] as tf.Scalar,
      };
    });
  }
}
