/**
 * Gradient kernels of the wasm backend of tfjs 4.22 that are missing, wrong or too slow for training,
 * registered so that the built-in models (and most custom topologies) train on wasm.
 *
 * - Conv2DBackpropFilter (the filter gradient of every Conv2D), missing: im2col written in JS
 *   straight into the wasm heap ([B·OH·OW, KH·KW·CI], no copies), multiplied with dy [B·OH·OW, CO]
 *   by wasm's matMul. Delegating to the cpu kernel instead (a scalar JS loop, plus
 *   copies) measured three orders of magnitude slower (test/bench/worker-runtime.bench.ts).
 * - MaxPoolGrad, when wasm's own fails a self-check at start: tfjs-backend-wasm 4.22 drops the
 *   gradient of windows whose maximum is ≤ 0 and routes ties to the last maximum where cpu takes the
 *   first (found by test/unit/wasm-kernels.test.ts). The replacement loops over the windows in JS,
 *   reading and writing the wasm heap in place (no copies): a formulation through wasm kernels
 *   (strided slices, a rank-6 transpose) measured 17× slower than wasm's own kernel, this one about
 *   as fast (test/bench/worker-runtime.bench.ts).
 * - Conv2DBackpropInput of stride-1 convolutions: wasm's own is a naive loop, 25× slower than the
 *   forward convolution; the replacement is that forward convolution (XNNPACK) of the padded dy with
 *   the filter rotated by 180° and its channels swapped. Other strides keep wasm's kernel.
 * - BatchMatMul with a transposed operand (every dense layer's gradient): wasm's kernel takes a slow
 *   path, 10–35× slower than transposing explicitly first, which the replacement does.
 * - A few kernels that custom topologies may need (depthwise convolution gradients, the gradient of
 *   gather/embeddings, einsum) by delegation to the cpu kernel: the inputs are copied out of the wasm
 *   heap, the cpu kernel runs, the outputs are copied back. Slow, but correct and never on the path of
 *   the built-in models.
 *
 * Each kernel is checked numerically against cpu in test/unit/wasm-kernels.test.ts.
 */
import * as tf from '@tensorflow/tfjs';

type TensorInfo = tf.TensorInfo;
type KernelBackend = tf.KernelBackend;
type NamedInputs = Record<string, TensorInfo> | TensorInfo[];
type Attrs = Record<string, unknown>;

interface WasmBackendLike extends KernelBackend {
  makeOutput(shape: number[], dtype: tf.DataType, memoryOffset?: number, values?: tf.TypedArray): TensorInfo;
  /** A view of a tensor's data on the wasm heap (no copy); detached if the heap grows. */
  typedArrayFromHeap(info: TensorInfo): tf.TypedArray;
}

/** Kernels registered by delegation when wasm has none. */
export const DELEGATED_KERNELS = [
  'DepthwiseConv2dNativeBackpropFilter',
  'DepthwiseConv2dNativeBackpropInput',
  'UnsortedSegmentSum',
  'Einsum',
] as const;

type KernelArgs = { inputs: tf.NamedTensorInfoMap; backend: KernelBackend; attrs?: tf.NamedAttrMap };

/** The two named inputs a kernel needs, or an error naming the kernel and what it lacked. */
function requireInputs(
  kernel: string,
  inputs: tf.NamedTensorInfoMap,
  a: string,
  b: string,
): [TensorInfo, TensorInfo] {
  const first = inputs[a];
  const second = inputs[b];
  if (first === undefined || second === undefined) throw new Error(`${kernel} needs ${a} and ${b}`);
  return [first, second];
}

function wasmKernel(name: string): tf.KernelFunc {
  const kernel = tf.getKernel(name, 'wasm');
  if (kernel === undefined) throw new Error(`wasm kernel ${name} is not registered`);
  return kernel.kernelFunc;
}

/** Runs wasm kernels directly (not through the engine) and frees every intermediate on dispose. */
class KernelScope {
  private readonly temps: TensorInfo[] = [];
  constructor(private readonly backend: KernelBackend) {}

  run(name: string, inputs: NamedInputs, attrs: Attrs = {}): TensorInfo {
    const out = wasmKernel(name)({
      inputs: inputs as tf.NamedTensorInfoMap,
      backend: this.backend,
      attrs: attrs as tf.NamedAttrMap,
    });
    if (Array.isArray(out)) throw new Error(`kernel ${name} returned several outputs`);
    this.temps.push(out);
    return out;
  }

  /** Frees `info` with the scope (a tensor made with makeOutput). */
  adopt(info: TensorInfo): void {
    this.temps.push(info);
  }

  /** Like run, but the result is handed to the caller (not freed). */
  keep(name: string, inputs: NamedInputs, attrs: Attrs = {}): TensorInfo {
    const out = this.run(name, inputs, attrs);
    this.temps.pop();
    return out;
  }

  dispose(): void {
    for (const t of this.temps) this.backend.disposeData(t.dataId);
    this.temps.length = 0;
  }
}

interface Conv2DBackpropFilterAttrs {
  strides: number | [number, number];
  pad: 'valid' | 'same' | number | tf.backend_util.ExplicitPadding;
  dataFormat: 'NHWC' | 'NCHW';
  dimRoundingMode?: 'floor' | 'round' | 'ceil';
  filterShape: [number, number, number, number];
}

/**
 * im2col for NHWC input, a row per output position: [rows, KH·KW·CI], copied straight from the heap
 * (contiguous runs of CI values); `out` is zeroed, so positions in the padding stay 0.
 */
function im2col(input: Float32Array, out: Float32Array, info: tf.backend_util.Conv2DInfo): void {
  const { batchSize, inHeight, inWidth, inChannels, outHeight, outWidth } = info;
  const { filterHeight, filterWidth, strideHeight, strideWidth, padInfo } = info;
  const columns = filterHeight * filterWidth * inChannels;
  let row = 0;
  for (let b = 0; b < batchSize; b++) {
    for (let oh = 0; oh < outHeight; oh++) {
      const top = oh * strideHeight - padInfo.top;
      for (let ow = 0; ow < outWidth; ow++) {
        const left = ow * strideWidth - padInfo.left;
        let at = row * columns;
        // (KH·KW·CI entries of this row, in the filter's [kh][kw][ci] order.)
        const inside = left >= 0 && left + filterWidth <= inWidth;
        for (let kh = 0; kh < filterHeight; kh++) {
          const h = top + kh;
          if (h < 0 || h >= inHeight) {
            at += filterWidth * inChannels;
            continue;
          }
          const from = ((b * inHeight + h) * inWidth + left) * inChannels;
          if (inside) {
            // The KW·CI values of this filter row are contiguous in NHWC: one memcpy.
            out.set(input.subarray(from, from + filterWidth * inChannels), at);
            at += filterWidth * inChannels;
            continue;
          }
          for (let kw = 0; kw < filterWidth; kw++) {
            const w = left + kw;
            if (w >= 0 && w < inWidth) {
              const start = from + kw * inChannels;
              for (let c = 0; c < inChannels; c++) out[at + c] = input[start + c] as number;
            }
            at += inChannels;
          }
        }
        row++;
      }
    }
  }
}

function conv2DBackpropFilter(args: KernelArgs): TensorInfo {
  const backend = args.backend as WasmBackendLike;
  const attrs = args.attrs as unknown as Conv2DBackpropFilterAttrs;
  const [x, dy] = requireInputs('Conv2DBackpropFilter', args.inputs, 'x', 'dy');
  if (attrs.dataFormat === 'NCHW') return delegateToCpu('Conv2DBackpropFilter')(args) as TensorInfo;
  const info = tf.backend_util.computeConv2DInfo(
    x.shape as [number, number, number, number],
    attrs.filterShape,
    attrs.strides,
    1,
    attrs.pad,
    attrs.dimRoundingMode,
    false,
    'channelsLast',
  );
  const { batchSize, inChannels, outChannels, outHeight, outWidth, filterHeight, filterWidth } = info;
  const rows = batchSize * outHeight * outWidth;
  const columns = filterHeight * filterWidth * inChannels;
  const scope = new KernelScope(backend);
  try {
    const patches = backend.makeOutput([rows, columns], 'float32');
    scope.adopt(patches);
    const input = backend.typedArrayFromHeap(x) as Float32Array;
    const out = backend.typedArrayFromHeap(patches) as Float32Array;
    out.fill(0);
    im2col(input, out, info);
    // dWᵀ = dyᵀ · patches: transposing dy [rows, CO] is cheaper than the patches [rows, KH·KW·CI],
    // and wasm's matMul is much slower when asked to transpose an operand itself.
    const gradients = scope.run('Reshape', { x: dy }, { shape: [rows, outChannels] });
    const gradientsT = scope.run('Transpose', { x: gradients }, { perm: [1, 0] });
    const productT = scope.run(
      'BatchMatMul',
      { a: gradientsT, b: patches },
      { transposeA: false, transposeB: false },
    );
    const product = scope.run('Transpose', { x: productT }, { perm: [1, 0] });
    return scope.keep('Reshape', { x: product }, { shape: [...attrs.filterShape] });
  } finally {
    scope.dispose();
  }
}

interface Conv2DBackpropInputAttrs {
  strides: number | [number, number];
  pad: 'valid' | 'same' | number | tf.backend_util.ExplicitPadding;
  dataFormat: 'NHWC' | 'NCHW';
  dimRoundingMode?: 'floor' | 'round' | 'ceil';
  inputShape: [number, number, number, number];
}

/**
 * dx of a stride-1 convolution as a forward convolution (XNNPACK) of dy with the filter rotated by
 * 180° and its channels swapped; other cases keep wasm's own kernel, which is correct but a naive loop.
 */
function conv2DBackpropInput(original: tf.KernelFunc): (args: KernelArgs) => TensorInfo {
  return (args) => {
    const { backend } = args;
    const attrs = args.attrs as unknown as Conv2DBackpropInputAttrs;
    const [dy, filter] = requireInputs('Conv2DBackpropInput', args.inputs, 'dy', 'filter');
    const info = tf.backend_util.computeConv2DInfo(
      attrs.inputShape,
      filter.shape as [number, number, number, number],
      attrs.strides,
      1,
      attrs.pad,
      attrs.dimRoundingMode,
      false,
      'channelsLast',
    );
    const {
      filterHeight,
      filterWidth,
      strideHeight,
      strideWidth,
      padInfo,
      inHeight,
      inWidth,
      outHeight,
      outWidth,
    } = info;
    const top = filterHeight - 1 - padInfo.top;
    const left = filterWidth - 1 - padInfo.left;
    const bottom = inHeight + filterHeight - 1 - top - outHeight;
    const right = inWidth + filterWidth - 1 - left - outWidth;
    if (
      attrs.dataFormat === 'NCHW' ||
      strideHeight !== 1 ||
      strideWidth !== 1 ||
      Math.min(top, left, bottom, right) < 0
    ) {
      return original(args) as TensorInfo;
    }
    const scope = new KernelScope(backend);
    try {
      const flipped = scope.run('Reverse', { x: filter }, { dims: [0, 1] });
      const swapped = scope.run('Transpose', { x: flipped }, { perm: [0, 1, 3, 2] });
      const padded =
        top || left || bottom || right
          ? scope.run(
              'PadV2',
              { x: dy },
              {
                paddings: [
                  [0, 0],
                  [top, bottom],
                  [left, right],
                  [0, 0],
                ],
                constantValue: 0,
              },
            )
          : dy;
      return scope.keep(
        'Conv2D',
        { x: padded, filter: swapped },
        { strides: 1, pad: 'valid', dataFormat: 'NHWC', dilations: 1, dimRoundingMode: undefined },
      );
    } finally {
      scope.dispose();
    }
  };
}

/**
 * BatchMatMul with transposeA/transposeB as an explicit transpose and a plain product: wasm's kernel
 * takes a slow path for transposed operands (10–35× slower measured), and every dense layer's
 * gradient multiplies by a transposed matrix.
 */
function batchMatMul(original: tf.KernelFunc): (args: KernelArgs) => TensorInfo {
  return (args) => {
    const { backend } = args;
    const attrs = (args.attrs ?? {}) as { transposeA?: boolean; transposeB?: boolean };
    const [a, b] = requireInputs('BatchMatMul', args.inputs, 'a', 'b');
    if (!attrs.transposeA && !attrs.transposeB) return original(args) as TensorInfo;
    const scope = new KernelScope(backend);
    const flip = (t: TensorInfo) => {
      const perm = t.shape.map((_, i) => i);
      const rank = perm.length;
      perm[rank - 2] = rank - 1;
      perm[rank - 1] = rank - 2;
      return scope.run('Transpose', { x: t }, { perm });
    };
    try {
      return original({
        inputs: { a: attrs.transposeA ? flip(a) : a, b: attrs.transposeB ? flip(b) : b },
        backend,
        attrs: { ...args.attrs, transposeA: false, transposeB: false },
      }) as TensorInfo;
    } finally {
      scope.dispose();
    }
  };
}

interface PoolGradAttrs {
  filterSize: number | [number, number];
  strides: number | [number, number];
  pad: 'valid' | 'same' | number | tf.backend_util.ExplicitPadding;
  dimRoundingMode?: 'floor' | 'round' | 'ceil';
}

function maxPoolGrad(args: KernelArgs): TensorInfo {
  const backend = args.backend as WasmBackendLike;
  const attrs = args.attrs as unknown as PoolGradAttrs;
  const [dy, x] = requireInputs('MaxPoolGrad', args.inputs, 'dy', 'input');
  const info = tf.backend_util.computePool2DInfo(
    x.shape as [number, number, number, number],
    attrs.filterSize,
    attrs.strides,
    1,
    attrs.pad,
    attrs.dimRoundingMode,
  );
  const { batchSize, inHeight, inWidth, inChannels: channels, outHeight, outWidth } = info;
  const { filterHeight, filterWidth, strideHeight, strideWidth, padInfo } = info;
  // Allocate first: growing the heap detaches earlier views of it.
  const dx = backend.makeOutput([...x.shape], 'float32');
  const input = backend.typedArrayFromHeap(x) as Float32Array;
  const gradient = backend.typedArrayFromHeap(dy) as Float32Array;
  const out = backend.typedArrayFromHeap(dx) as Float32Array;
  out.fill(0);
  const best = new Float32Array(channels);
  const at = new Int32Array(channels);
  for (let b = 0; b < batchSize; b++) {
    for (let oh = 0; oh < outHeight; oh++) {
      const top = oh * strideHeight - padInfo.top;
      for (let ow = 0; ow < outWidth; ow++) {
        const left = ow * strideWidth - padInfo.left;
        best.fill(Number.NEGATIVE_INFINITY);
        at.fill(-1);
        // Window positions in row-major order, the first maximum wins: the cpu kernel's rule.
        for (let kh = 0; kh < filterHeight; kh++) {
          const h = top + kh;
          if (h < 0 || h >= inHeight) continue;
          for (let kw = 0; kw < filterWidth; kw++) {
            const w = left + kw;
            if (w < 0 || w >= inWidth) continue;
            const base = ((b * inHeight + h) * inWidth + w) * channels;
            for (let c = 0; c < channels; c++) {
              const value = input[base + c] as number;
              if (value > (best[c] as number)) {
                best[c] = value;
                at[c] = base + c;
              }
            }
          }
        }
        const source = ((b * outHeight + oh) * outWidth + ow) * channels;
        for (let c = 0; c < channels; c++) {
          const target = at[c] as number;
          if (target >= 0) out[target] = (out[target] as number) + (gradient[source + c] as number);
        }
      }
    }
  }
  return dx;
}

/**
 * Whether wasm's own MaxPoolGrad is right on a small multi-channel case (computed by hand here), so
 * that a fixed tfjs keeps its faster C++ kernel.
 */
function wasmMaxPoolGradIsCorrect(): boolean {
  const shape = [1, 4, 4, 3];
  // Negative maxima and a tie (at 0 and 5): the cases tfjs-backend-wasm 4.22 gets wrong.
  const values = Array.from({ length: 48 }, (_, i) => ((i * 37) % 48) / 48 - 0.75);
  values[3] = values[0] as number;
  const weights = Array.from({ length: 12 }, (_, i) => i + 1);
  const expected = new Float32Array(48);
  for (let oh = 0; oh < 2; oh++) {
    for (let ow = 0; ow < 2; ow++) {
      for (let ch = 0; ch < 3; ch++) {
        let best = Number.NEGATIVE_INFINITY;
        let at = -1;
        for (let kh = 0; kh < 2; kh++) {
          for (let kw = 0; kw < 2; kw++) {
            const i = ((oh * 2 + kh) * 4 + ow * 2 + kw) * 3 + ch;
            if ((values[i] as number) > best) {
              best = values[i] as number;
              at = i;
            }
          }
        }
        expected[at] = (expected[at] as number) + (weights[(oh * 2 + ow) * 3 + ch] as number);
      }
    }
  }
  // Runs on the active backend, which registerWasmTrainingKernels requires to be wasm.
  const actual = tf.tidy(() => {
    const x = tf.tensor4d(values, shape as [number, number, number, number]);
    const w = tf.tensor4d(weights, [1, 2, 2, 3]);
    return tf
      .grad((input: tf.Tensor) => tf.sum(tf.mul(tf.maxPool(input as tf.Tensor4D, 2, 2, 'valid'), w)))(x)
      .dataSync();
  });
  return actual.every((v, i) => Math.abs(v - (expected[i] as number)) < 1e-6);
}

/** A wasm kernel that runs the cpu kernel of the same name on copies of its inputs. */
export function delegateToCpu(kernelName: string): tf.KernelFunc {
  return ({ inputs, backend, attrs }) => {
    const cpu = tf.engine().findBackend('cpu');
    const cpuKernel = tf.getKernel(kernelName, 'cpu');
    if (cpu === null || cpuKernel === undefined)
      throw new Error(`no cpu kernel ${kernelName} to delegate to`);
    const wasm = backend as WasmBackendLike;
    const copied: tf.NamedTensorInfoMap = {};
    const entries: [string, TensorInfo][] = Array.isArray(inputs)
      ? (inputs as TensorInfo[]).map((t, i): [string, TensorInfo] => [String(i), t])
      : Object.entries(inputs).filter((e): e is [string, TensorInfo] => e[1] !== undefined);
    for (const [name, t] of entries) {
      const values = wasm.readSync(t.dataId) as tf.TypedArray;
      copied[name] = { dataId: cpu.write(values, t.shape, t.dtype), shape: t.shape, dtype: t.dtype };
    }
    const cpuInputs = Array.isArray(inputs) ? Object.values(copied) : copied;
    try {
      const result = cpuKernel.kernelFunc({
        inputs: cpuInputs as tf.NamedTensorInfoMap,
        backend: cpu,
        ...(attrs === undefined ? {} : { attrs }),
      });
      const outputs = (Array.isArray(result) ? result : [result]).map((out) => {
        const values = cpu.readSync(out.dataId) as tf.TypedArray;
        cpu.disposeData(out.dataId);
        return wasm.makeOutput(out.shape, out.dtype, undefined, values);
      });
      return Array.isArray(result) ? outputs : (outputs[0] as TensorInfo);
    } finally {
      for (const t of Object.values(copied)) if (t !== undefined) cpu.disposeData(t.dataId);
    }
  };
}

let registered: string[] | undefined;
/** wasm's own kernels where they were replaced, for the benchmark that prices the replacements. */
export let originalWasmMaxPoolGrad: tf.KernelFunc | undefined;
export let originalWasmConv2DBackpropInput: tf.KernelFunc | undefined;
export let originalWasmBatchMatMul: tf.KernelFunc | undefined;

/** Replaces wasm's kernel `name` by `wrap(original)`; returns the original, or undefined if there was none. */
function wrapWasmKernel(name: string, wrap: (original: tf.KernelFunc) => unknown): tf.KernelFunc | undefined {
  const original = tf.getKernel(name, 'wasm')?.kernelFunc;
  if (original === undefined) return undefined;
  tf.unregisterKernel(name, 'wasm');
  tf.registerKernel({ kernelName: name, backendName: 'wasm', kernelFunc: wrap(original) as tf.KernelFunc });
  return original;
}

/**
 * Registers the missing training kernels for wasm (once per process) and returns their names.
 * Kernels that wasm already has are left alone, so a newer tfjs that adds them wins. Call it with
 * wasm as the active backend.
 */
export function registerWasmTrainingKernels(): string[] {
  if (registered !== undefined) return registered;
  if (tf.getBackend() !== 'wasm')
    throw new Error('registerWasmTrainingKernels needs wasm as the active backend');
  const added: string[] = [];
  if (tf.getKernel('Conv2DBackpropFilter', 'wasm') === undefined) {
    tf.registerKernel({
      kernelName: 'Conv2DBackpropFilter',
      backendName: 'wasm',
      kernelFunc: conv2DBackpropFilter as unknown as tf.KernelFunc,
    });
    added.push('Conv2DBackpropFilter');
  }
  originalWasmBatchMatMul = wrapWasmKernel('BatchMatMul', batchMatMul);
  if (originalWasmBatchMatMul !== undefined)
    added.push('BatchMatMul (transposed operands transposed explicitly)');
  originalWasmConv2DBackpropInput = wrapWasmKernel('Conv2DBackpropInput', conv2DBackpropInput);
  if (originalWasmConv2DBackpropInput !== undefined)
    added.push('Conv2DBackpropInput (stride 1 as a convolution)');
  if (!wasmMaxPoolGradIsCorrect()) {
    originalWasmMaxPoolGrad = tf.getKernel('MaxPoolGrad', 'wasm')?.kernelFunc;
    tf.unregisterKernel('MaxPoolGrad', 'wasm');
    tf.registerKernel({
      kernelName: 'MaxPoolGrad',
      backendName: 'wasm',
      kernelFunc: maxPoolGrad as unknown as tf.KernelFunc,
    });
    added.push('MaxPoolGrad (replaces a wrong one)');
  }
  for (const name of DELEGATED_KERNELS) {
    if (tf.getKernel(name, 'wasm') !== undefined || tf.getKernel(name, 'cpu') === undefined) continue;
    tf.registerKernel({ kernelName: name, backendName: 'wasm', kernelFunc: delegateToCpu(name) });
    added.push(`${name} (delegated to cpu)`);
  }
  registered = added;
  return added;
}

/** The cpu-delegating Conv2DBackpropFilter, for the benchmark that justifies the native one. */
export const conv2DBackpropFilterDelegate = delegateToCpu('Conv2DBackpropFilter');
export const conv2DBackpropFilterNative = conv2DBackpropFilter as unknown as tf.KernelFunc;
export const maxPoolGradNative = maxPoolGrad as unknown as tf.KernelFunc;
