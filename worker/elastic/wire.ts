/**
 * A training snapshot as one byte string, for the broadcast that gives every member of a new world
 * the source's weights, optimizer state, step, data cursor and policy state. The same files as a
 * checkpoint (snapshot.ts), length-prefixed: [count][nameLength name byteLength bytes]..., uint32 LE.
 */
import { WorkerError } from '../errors.ts';
import { decodeSnapshot, encodeSnapshot, type Snapshot } from '../train/snapshot.ts';

/** A state broadcast arrived malformed or cut short: the sender's world is gone; rejoin. */
export class SnapshotWireError extends WorkerError {
  override readonly name = 'SnapshotWireError';
  readonly classification = 'retryable';
}

export function packSnapshot(snapshot: Snapshot): Uint8Array {
  const files = [...encodeSnapshot(snapshot)].map(
    ([name, bytes]) => [new TextEncoder().encode(name), bytes] as const,
  );
  const size = 4 + files.reduce((sum, [name, bytes]) => sum + 8 + name.byteLength + bytes.byteLength, 0);
  const out = new Uint8Array(size);
  const view = new DataView(out.buffer);
  view.setUint32(0, files.length, true);
  let at = 4;
  for (const [name, bytes] of files) {
    view.setUint32(at, name.byteLength, true);
    out.set(name, at + 4);
    at += 4 + name.byteLength;
    view.setUint32(at, bytes.byteLength, true);
    out.set(bytes, at + 4);
    at += 4 + bytes.byteLength;
  }
  return out;
}

export function unpackSnapshot(bytes: Uint8Array): Snapshot {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const read = (at: number): number => {
    if (at + 4 > bytes.byteLength) throw new SnapshotWireError(`snapshot truncated at byte ${at}`);
    return view.getUint32(at, true);
  };
  const count = read(0);
  const files = new Map<string, Uint8Array>();
  let at = 4;
  for (let i = 0; i < count; i++) {
    const nameLength = read(at);
    if (at + 4 + nameLength > bytes.byteLength) throw new SnapshotWireError('snapshot truncated in a name');
    const name = new TextDecoder().decode(bytes.subarray(at + 4, at + 4 + nameLength));
    at += 4 + nameLength;
    const length = read(at);
    if (at + 4 + length > bytes.byteLength) throw new SnapshotWireError(`snapshot truncated in ${name}`);
    files.set(name, bytes.subarray(at + 4, at + 4 + length));
    at += 4 + length;
  }
  try {
    return decodeSnapshot(files);
  } catch (error) {
    throw new SnapshotWireError(`bad snapshot: ${(error as Error).message}`, { cause: error });
  }
}
