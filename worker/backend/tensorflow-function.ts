/**
 * TensorFlow functions on the native backend: a graph written here, serialized as a FunctionDef
 * protocol buffer, registered once with the eager context (the binding tfjs-node gets from
 * hack/patches/tfjs-node-add-function-def.patch) and then run by name as ONE op. A train step that is
 * tens of eager ops, each a TFE_Execute with its JS bookkeeping, becomes one call: the per-op
 * dispatch is what kept a small model's step several times slower than a plain torch loop.
 *
 * The encoder writes only the parts of function.proto, op_def.proto, node_def.proto, attr_value.proto,
 * tensor.proto and tensor_shape.proto these graphs use; field numbers are those of TensorFlow's protos.
 */
import * as tf from '@tensorflow/tfjs';

export type FunctionDType = 'float32' | 'int32' | 'bool';

/** TensorFlow's DataType enum (types.proto). */
const DATA_TYPE: Record<FunctionDType, number> = { float32: 1, int32: 3, bool: 10 };

export type Attr =
  | { readonly type: FunctionDType }
  | { readonly i: number }
  | { readonly f: number }
  | { readonly b: boolean }
  | { readonly s: string }
  | { readonly ints: readonly number[] }
  | { readonly int32Tensor: readonly number[]; readonly scalar?: boolean }
  | { readonly floatScalar: number };

/** Protocol buffer wire format: varints, length-delimited fields, fixed32 floats. */
class ProtoWriter {
  private readonly bytes: number[] = [];

  private varint(value: number): void {
    if (!Number.isInteger(value) || value < 0)
      throw new RangeError(`protobuf varint ${value}: only non-negative integers are written here`);
    let v = value;
    while (v >= 0x80) {
      this.bytes.push((v % 0x80) | 0x80);
      v = Math.floor(v / 0x80);
    }
    this.bytes.push(v);
  }

  private tag(field: number, wire: number): void {
    this.varint(field * 8 + wire);
  }

  uint(field: number, value: number): this {
    this.tag(field, 0);
    this.varint(value);
    return this;
  }

  bool(field: number, value: boolean): this {
    return this.uint(field, value ? 1 : 0);
  }

  float(field: number, value: number): this {
    this.tag(field, 5);
    const b = new Uint8Array(new Float32Array([value]).buffer);
    this.bytes.push(...b);
    return this;
  }

  raw(field: number, value: Uint8Array): this {
    this.tag(field, 2);
    this.varint(value.length);
    for (const b of value) this.bytes.push(b);
    return this;
  }

  string(field: number, value: string): this {
    return this.raw(field, new TextEncoder().encode(value));
  }

  message(field: number, write: (w: ProtoWriter) => void): this {
    const inner = new ProtoWriter();
    write(inner);
    return this.raw(field, inner.finish());
  }

  finish(): Uint8Array {
    return Uint8Array.from(this.bytes);
  }
}

function shapeProto(w: ProtoWriter, dims: readonly number[]): void {
  for (const d of dims) w.message(2, (dim) => dim.uint(1, d)); // TensorShapeProto.dim.size
}

function attrValue(w: ProtoWriter, attr: Attr): void {
  if ('type' in attr) w.uint(6, DATA_TYPE[attr.type]);
  else if ('i' in attr) w.uint(3, attr.i);
  else if ('f' in attr) w.float(4, attr.f);
  else if ('b' in attr) w.bool(5, attr.b);
  else if ('s' in attr) w.string(2, attr.s);
  else if ('ints' in attr)
    w.message(1, (list) => {
      for (const v of attr.ints) list.uint(3, v);
    });
  else if ('int32Tensor' in attr)
    // TensorProto: dtype, tensor_shape, tensor_content (little-endian bytes: negatives need no varint)
    w.message(8, (t) => {
      t.uint(1, DATA_TYPE.int32);
      t.message(2, (s) => shapeProto(s, attr.scalar === true ? [] : [attr.int32Tensor.length]));
      t.raw(4, new Uint8Array(Int32Array.from(attr.int32Tensor).buffer));
    });
  else
    w.message(8, (t) => {
      t.uint(1, DATA_TYPE.float32);
      t.message(2, () => undefined);
      t.raw(4, new Uint8Array(new Float32Array([attr.floatScalar]).buffer));
    });
}

function attrMap(w: ProtoWriter, field: number, attrs: Readonly<Record<string, Attr>>): void {
  for (const [key, value] of Object.entries(attrs))
    w.message(field, (entry) => {
      entry.string(1, key);
      entry.message(2, (v) => attrValue(v, value));
    });
}

/** The name of each op's outputs, as a function body refers to them (`node:arg:index`). */
const OUTPUT_ARGS: Readonly<Record<string, readonly string[]>> = {
  AddV2: ['z'],
  ArgMax: ['output'],
  BiasAdd: ['output'],
  BiasAddGrad: ['output'],
  Cast: ['y'],
  Const: ['output'],
  Conv2D: ['output'],
  Conv2DBackpropFilter: ['output'],
  Conv2DBackpropInput: ['output'],
  Equal: ['z'],
  Identity: ['output'],
  MatMul: ['product'],
  MaxPool: ['output'],
  MaxPoolGrad: ['output'],
  Mul: ['z'],
  RealDiv: ['z'],
  Relu: ['activations'],
  ReluGrad: ['backprops'],
  Reshape: ['output'],
  Shape: ['output'],
  Sqrt: ['y'],
  Square: ['y'],
  Sub: ['z'],
  Sum: ['output'],
  SparseSoftmaxCrossEntropyWithLogits: ['loss', 'backprop'],
};

interface NodeDef {
  readonly name: string;
  readonly op: string;
  readonly inputs: readonly string[];
  readonly attrs: Readonly<Record<string, Attr>>;
}

/** A function body under construction: named inputs, nodes in any order, named outputs. */
export class FunctionGraph {
  private readonly inputs: { name: string; dtype: FunctionDType }[] = [];
  private readonly outputs: { name: string; dtype: FunctionDType; ref: string }[] = [];
  private readonly nodes: NodeDef[] = [];

  /**
   * The function's own attributes (FunctionDef.attr), e.g. `_XlaMustCompile` to have TensorFlow
   * compile the whole body with XLA instead of running it node by node.
   */
  constructor(
    readonly name: string,
    private readonly attrs: Readonly<Record<string, Attr>> = {},
  ) {}

  /** A function argument; the value is its reference in the body. */
  input(name: string, dtype: FunctionDType = 'float32'): string {
    this.inputs.push({ name, dtype });
    return name;
  }

  /** A node; the references of its outputs, in order. */
  op(op: string, inputs: readonly string[], attrs: Readonly<Record<string, Attr>> = {}): string[] {
    const args = OUTPUT_ARGS[op];
    if (args === undefined) throw new Error(`FunctionGraph: no output names known for op ${op}`);
    const name = `n${this.nodes.length}_${op}`;
    this.nodes.push({ name, op, inputs, attrs });
    return args.map((arg) => `${name}:${arg}:0`);
  }

  /** A node of one output (most ops). */
  op1(op: string, inputs: readonly string[], attrs: Readonly<Record<string, Attr>> = {}): string {
    return this.op(op, inputs, attrs)[0] as string;
  }

  output(name: string, ref: string, dtype: FunctionDType = 'float32'): void {
    this.outputs.push({ name, dtype, ref });
  }

  get inputCount(): number {
    return this.inputs.length;
  }

  get outputCount(): number {
    return this.outputs.length;
  }

  /** The serialized FunctionDef, registered under `name`. */
  encode(name = this.name): Uint8Array {
    const w = new ProtoWriter();
    w.message(1, (sig) => {
      sig.string(1, name);
      for (const a of this.inputs) sig.message(2, (arg) => arg.string(1, a.name).uint(3, DATA_TYPE[a.dtype]));
      for (const a of this.outputs)
        sig.message(3, (arg) => arg.string(1, a.name).uint(3, DATA_TYPE[a.dtype]));
    });
    for (const node of this.nodes)
      w.message(3, (n) => {
        n.string(1, node.name).string(2, node.op);
        for (const input of node.inputs) n.string(3, input);
        attrMap(n, 5, node.attrs);
      });
    for (const out of this.outputs)
      w.message(4, (entry) => {
        entry.string(1, out.name);
        entry.string(2, out.ref);
      });
    attrMap(w, 5, this.attrs);
    return w.finish();
  }
}

/** The part of tfjs-node's NodeJSKernelBackend (and its binding) used here. */
interface FunctionBackend {
  readonly binding: { addFunctionDef?: (def: Uint8Array) => void };
  executeMultipleOutputs(name: string, attrs: unknown[], inputs: tf.Tensor[], outputs: number): tf.Tensor[];
}

function functionBackend(): FunctionBackend | undefined {
  if (tf.getBackend() !== 'tensorflow') return undefined;
  const backend = tf.backend() as unknown as Partial<FunctionBackend>;
  if (typeof backend.executeMultipleOutputs !== 'function') return undefined;
  if (typeof backend.binding?.addFunctionDef !== 'function') return undefined;
  return backend as FunctionBackend;
}

/** Why functions cannot run here, or undefined when they can. */
export function functionsUnavailable(): string | undefined {
  if (tf.getBackend() !== 'tensorflow') return `the backend is ${tf.getBackend()}, not tensorflow`;
  if (functionBackend() === undefined)
    return 'the tfjs-node addon has no addFunctionDef (built before hack/patches; re-run bash hack/install-tensorflow.sh)';
  return undefined;
}

let counter = 0;

/** A registered function, run as one op. */
export class TensorflowFunction {
  private constructor(
    readonly name: string,
    private readonly backend: FunctionBackend,
    private readonly inputs: number,
    private readonly outputs: number,
  ) {}

  /** Registers `graph` (under a name made unique in this process) with the eager context. */
  static register(graph: FunctionGraph): TensorflowFunction {
    const backend = functionBackend();
    if (backend === undefined)
      throw new Error(`TensorFlow functions are unavailable: ${functionsUnavailable()}`);
    // The eager context outlives a model (tests build many): each registration gets its own name.
    const name = `${graph.name}_${counter++}`;
    backend.binding.addFunctionDef?.(graph.encode(name));
    return new TensorflowFunction(name, backend, graph.inputCount, graph.outputCount);
  }

  /** Runs the function: the outputs are new tensors, tracked by the current tidy scope. */
  call(inputs: readonly tf.Tensor[]): tf.Tensor[] {
    if (inputs.length !== this.inputs)
      throw new Error(`function ${this.name} takes ${this.inputs} inputs, got ${inputs.length}`);
    return this.backend.executeMultipleOutputs(this.name, [], [...inputs], this.outputs);
  }
}
