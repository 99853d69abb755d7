/**
 * IDX files (MNIST, Fashion-MNIST): a 4-byte magic (0, 0, type, rank), `rank` big-endian uint32
 * dimensions, then the values. Streamed (gzip or not) straight into one array of the size the header
 * announces; unsigned bytes stay uint8, float32 values are converted from big-endian.
 */
import { DatasetError } from '../errors.ts';
import { byteChunks } from './files.ts';

export interface IdxArray {
  readonly file: string;
  readonly dims: readonly number[];
  readonly data: Uint8Array | Float32Array;
}

const TYPES: Record<number, { name: string; bytes: number } | undefined> = {
  8: { name: 'unsigned byte', bytes: 1 },
  9: { name: 'signed byte', bytes: 1 },
  11: { name: 'int16', bytes: 2 },
  12: { name: 'int32', bytes: 4 },
  13: { name: 'float32', bytes: 4 },
  14: { name: 'float64', bytes: 8 },
};

/** Upper bound on one IDX array, so a corrupt header cannot ask for terabytes. */
const MAX_BYTES = 8 * 1024 ** 3;

export interface IdxHeader {
  readonly dims: readonly number[];
  /** 0x08 unsigned bytes, 0x0d big-endian float32. */
  readonly type: 0x08 | 0x0d;
  /** Bytes of data the header announces. */
  readonly bytes: number;
}

function parseHeader(file: string, header: Buffer): IdxHeader | undefined {
  if (header.length < 4) return undefined;
  if (header[0] !== 0 || header[1] !== 0) {
    throw new DatasetError(
      file,
      `not an IDX file: wrong magic 0x${header.subarray(0, 4).toString('hex')} (expected 0x0000TTRR)`,
    );
  }
  const type = header[2] as number;
  const rank = header[3] as number;
  const info = TYPES[type];
  if (info === undefined)
    throw new DatasetError(file, `not an IDX file: unknown value type 0x${type.toString(16)}`);
  if (type !== 0x08 && type !== 0x0d)
    throw new DatasetError(
      file,
      `IDX values of type ${info.name} are not supported (use unsigned byte or float32)`,
    );
  if (rank < 1) throw new DatasetError(file, 'IDX header with rank 0');
  if (header.length < 4 + 4 * rank) return undefined;
  const dims = Array.from({ length: rank }, (_, i) => header.readUInt32BE(4 + 4 * i));
  return { dims, type, bytes: dims.reduce((a, b) => a * b, 1) * info.bytes };
}

/**
 * Streams an IDX file: `onHeader` once, then `onData` with the value bytes as they come (big-endian
 * for float32), without holding the file; checks the length against the header.
 */
export async function streamIdx(
  file: string,
  onHeader: (header: IdxHeader) => void,
  onData: (bytes: Buffer) => void,
): Promise<IdxHeader> {
  let pending: Buffer = Buffer.alloc(0);
  let header: IdxHeader | undefined;
  let filled = 0;
  for await (const chunk of byteChunks(file)) {
    let rest: Buffer = chunk;
    if (header === undefined) {
      pending = Buffer.concat([pending, chunk]);
      header = parseHeader(file, pending);
      if (header === undefined) continue;
      if (header.bytes > MAX_BYTES)
        throw new DatasetError(file, `IDX header announces ${header.bytes} bytes; corrupt header?`);
      onHeader(header);
      rest = pending.subarray(4 + 4 * header.dims.length);
    }
    if (filled + rest.length > header.bytes) {
      throw new DatasetError(
        file,
        `more data than the header's dimensions [${header.dims.join(', ')}] announce (${header.bytes} bytes); wrong shape?`,
      );
    }
    if (rest.length > 0) onData(rest);
    filled += rest.length;
  }
  if (header === undefined) {
    throw new DatasetError(
      file,
      pending.length === 0 ? 'empty file' : 'truncated: the IDX header is incomplete',
    );
  }
  if (filled < header.bytes) {
    throw new DatasetError(
      file,
      `truncated: expected ${header.bytes} bytes of data for dimensions [${header.dims.join(', ')}], got ${filled}`,
    );
  }
  return header;
}

export async function readIdx(file: string): Promise<IdxArray> {
  let out = new Uint8Array(0);
  let filled = 0;
  const header = await streamIdx(
    file,
    (h) => {
      out = new Uint8Array(h.bytes);
    },
    (bytes) => {
      out.set(bytes, filled);
      filled += bytes.length;
    },
  );
  if (header.type === 0x0d) {
    const view = new DataView(out.buffer, out.byteOffset, out.byteLength);
    const floats = new Float32Array(out.length / 4);
    for (let i = 0; i < floats.length; i++) floats[i] = view.getFloat32(4 * i, false);
    return { file, dims: header.dims, data: floats };
  }
  return { file, dims: header.dims, data: out };
}

/** Reads an images/labels pair and checks that they agree. */
export async function readIdxPair(
  imagesFile: string,
  labelsFile: string,
): Promise<{ images: IdxArray; labels: Int32Array; featureShape: number[] }> {
  const [images, labelArray] = await Promise.all([readIdx(imagesFile), readIdx(labelsFile)]);
  if (images.dims.length < 2)
    throw new DatasetError(
      imagesFile,
      `expected samples of rank ≥ 1 (dimensions [N, ...]), got [${images.dims.join(', ')}]`,
    );
  if (labelArray.dims.length !== 1)
    throw new DatasetError(
      labelsFile,
      `expected one dimension of labels, got [${labelArray.dims.join(', ')}]`,
    );
  if (!(labelArray.data instanceof Uint8Array))
    throw new DatasetError(labelsFile, 'labels must be unsigned bytes');
  const count = images.dims[0] as number;
  if (labelArray.dims[0] !== count) {
    throw new DatasetError(
      labelsFile,
      `holds ${labelArray.dims[0]} labels but ${imagesFile} holds ${count} samples`,
    );
  }
  return { images, labels: Int32Array.from(labelArray.data), featureShape: images.dims.slice(1) };
}
