/**
 * Secure aggregation after Bonawitz et al. 2017 ("Practical Secure Aggregation for Privacy-Preserving
 * Machine Learning"), with double masking. Sites agree pairwise secrets over X25519, expand each into
 * a mask in the ring Z_2^32 and add it (the lower-indexed site of a pair) or subtract it (the higher);
 * every pairwise mask appears once with each sign, so they cancel in the sum. On top, each site adds a
 * self-mask expanded from a fresh seed b_u of its own, which nothing else cancels.
 *
 * Each site Shamir-shares both its mask key s_u and its seed b_u (t of n, over GF(2^521 − 1)) to the
 * others in advance, each pair of shares encrypted to its holder (AES-256-GCM under a separate X25519
 * channel key). At unmasking every holder reveals, for each site, exactly one of the two: its share of
 * b_u when u's input arrived (the self-mask is removed from the sum), its share of s_u when it did not
 * (u's pairwise masks are removed from the survivors' inputs). A holder never reveals both for one
 * site, and with t > n/2 two disjoint sets of holders cannot both reach t: so a site that was merely
 * late (counted as dropped, its input arriving afterwards) keeps its self-mask, and its input stays a
 * uniformly random vector to everyone. Fewer than t shares of what is needed: the round is retried.
 *
 * Against an adversary in the middle (whoever relays the messages, the coordinator included), each
 * site signs the keys it advertises with its Ed25519 identity key; the others verify the signature
 * against the public key they were given out of band (the spec or the launcher, not the relay).
 * Every function here is pure except for the randomness of new keys, seeds and share polynomials.
 */
import {
  createCipheriv,
  createDecipheriv,
  createHash,
  createPrivateKey,
  createPublicKey,
  diffieHellman,
  generateKeyPairSync,
  hkdfSync,
  type KeyObject,
  randomBytes,
  sign,
  verify,
} from 'node:crypto';

/** Fixed-point scale: 2^20 keeps ~1e-6 of precision and ±2048 of range for the summed values. */
export const FIXED_POINT_SCALE = 2 ** 20;
/** 2^521 − 1, a Mersenne prime above any 32-byte key. */
export const SHAMIR_PRIME = (1n << 521n) - 1n;

const PKCS8_X25519 = Buffer.from('302e020100300506032b656e04220420', 'hex');
const SPKI_X25519 = Buffer.from('302a300506032b656e032100', 'hex');

export interface KeyPair {
  /** The raw 32-byte private key. */
  readonly secret: Buffer;
  /** The raw 32-byte public key. */
  readonly public: Buffer;
}

export function newKeyPair(): KeyPair {
  const { privateKey, publicKey } = generateKeyPairSync('x25519');
  const der = privateKey.export({ format: 'der', type: 'pkcs8' });
  const spki = publicKey.export({ format: 'der', type: 'spki' });
  return { secret: der.subarray(der.length - 32), public: spki.subarray(spki.length - 32) };
}

const privateKeyOf = (raw: Buffer): KeyObject =>
  createPrivateKey({ key: Buffer.concat([PKCS8_X25519, raw]), format: 'der', type: 'pkcs8' });
const publicKeyOf = (raw: Buffer): KeyObject =>
  createPublicKey({ key: Buffer.concat([SPKI_X25519, raw]), format: 'der', type: 'spki' });

/** The public key of a raw private key (to check a rebuilt key against what its site advertised). */
export function publicOf(secret: Buffer): Buffer {
  const spki = createPublicKey(privateKeyOf(secret)).export({ format: 'der', type: 'spki' });
  return spki.subarray(spki.length - 32);
}

/** The secret two sites share for `purpose` in `round`: X25519, then HKDF-SHA256 bound to the round. */
export function pairwiseSeed(secret: Buffer, peerPublic: Buffer, round: string, purpose: string): Buffer {
  const shared = diffieHellman({ privateKey: privateKeyOf(secret), publicKey: publicKeyOf(peerPublic) });
  return Buffer.from(hkdfSync('sha256', shared, Buffer.from(round), Buffer.from(purpose), 32));
}

/** A seed expanded into `length` uniform words of Z_2^32 (AES-256-CTR keystream). */
export function expandMask(seed: Buffer, length: number): Uint32Array {
  const cipher = createCipheriv('aes-256-ctr', seed, Buffer.alloc(16));
  const stream = cipher.update(Buffer.alloc(length * 4));
  const out = new Uint32Array(length);
  for (let i = 0; i < length; i++) out[i] = stream.readUInt32LE(i * 4);
  return out;
}

/** Floats to the ring: round(v · scale) mod 2^32. */
export function encodeFixed(values: Float32Array, scale = FIXED_POINT_SCALE): Uint32Array {
  const out = new Uint32Array(values.length);
  for (let i = 0; i < values.length; i++) out[i] = Math.round((values[i] as number) * scale) >>> 0;
  return out;
}

/** The ring back to floats, reading each word as a signed 32-bit integer. */
export function decodeFixed(words: Uint32Array, scale = FIXED_POINT_SCALE): Float32Array {
  const out = new Float32Array(words.length);
  for (let i = 0; i < words.length; i++) out[i] = ((words[i] as number) | 0) / scale;
  return out;
}

/** `into += sign · mask` in Z_2^32. */
export function addMask(into: Uint32Array, mask: Uint32Array, sign: 1 | -1): void {
  for (let i = 0; i < into.length; i++)
    into[i] =
      (sign === 1 ? (into[i] as number) + (mask[i] as number) : (into[i] as number) - (mask[i] as number)) >>>
      0;
}

/** The sign site `self` gives the mask it shares with `peer`: the two always differ. */
export const maskSign = (self: number, peer: number): 1 | -1 => (self < peer ? 1 : -1);

/**
 * A site's masked input: its fixed-point words plus, for every peer that advertised a mask key, the
 * pairwise mask with the sign of the pair. `peers` maps site index → public mask key.
 */
export function maskInput(
  self: number,
  words: Uint32Array,
  secret: Buffer,
  peers: ReadonlyMap<number, Buffer>,
  round: string,
): Uint32Array {
  const out = words.slice();
  for (const [peer, pub] of peers) {
    if (peer === self) continue;
    addMask(out, expandMask(pairwiseSeed(secret, pub, round, 'mask'), words.length), maskSign(self, peer));
  }
  return out;
}

/** The ring sum of the masked inputs that arrived. */
export function sumInputs(inputs: Iterable<Uint32Array>, length: number): Uint32Array {
  const sum = new Uint32Array(length);
  for (const input of inputs) addMask(sum, input, 1);
  return sum;
}

/**
 * Removes from `sum` the masks a dropped site `dropped` (its rebuilt mask key `secret`) shared with
 * each survivor that masked against it: the survivors added them with maskSign(survivor, dropped).
 */
export function removeDroppedMasks(
  sum: Uint32Array,
  dropped: number,
  secret: Buffer,
  survivors: ReadonlyMap<number, Buffer>,
  round: string,
): void {
  for (const [survivor, pub] of survivors) {
    const mask = expandMask(pairwiseSeed(secret, pub, round, 'mask'), sum.length);
    addMask(sum, mask, maskSign(survivor, dropped) === 1 ? -1 : 1);
  }
}

/** A fresh self-mask seed b_u: 32 random bytes, new every round and attempt. */
export const newSelfSeed = (): Buffer => randomBytes(32);

/** `into += sign · PRG(b_u)`: the self-mask, added by its site and removed once b_u is rebuilt. */
export function addSelfMask(into: Uint32Array, seed: Buffer, sign: 1 | -1): void {
  addMask(into, expandMask(seed, into.length), sign);
}

/** A public commitment to a seed (SHA-256), advertised so a rebuilt seed can be checked. */
export const commitSeed = (seed: Buffer): string => createHash('sha256').update(seed).digest('base64');

// ------------------------------------------------------------------------------------ signatures

const SPKI_ED25519 = Buffer.from('302a300506032b6570032100', 'hex');

/**
 * An Ed25519 public key from base64 of its raw 32 bytes or of its DER SubjectPublicKeyInfo (44 bytes,
 * `openssl pkey -pubout -outform DER | base64`); undefined when it is neither.
 */
export function signingPublicKey(base64: string): KeyObject | undefined {
  const raw = Buffer.from(base64, 'base64');
  const der = raw.length === 32 ? Buffer.concat([SPKI_ED25519, raw]) : raw;
  if (der.length !== 44 || !der.subarray(0, 12).equals(SPKI_ED25519)) return undefined;
  try {
    return createPublicKey({ key: der, format: 'der', type: 'spki' });
  } catch {
    return undefined;
  }
}

/** The raw public key (base64) of a PKCS8 PEM private key. */
export function signingPublicOf(privatePem: string): string {
  const spki = createPublicKey(createPrivateKey(privatePem)).export({ format: 'der', type: 'spki' });
  return spki.subarray(spki.length - 32).toString('base64');
}

export const signMessage = (message: string, privatePem: string): string =>
  sign(null, Buffer.from(message), createPrivateKey(privatePem)).toString('base64');

export const verifyMessage = (message: string, signature: string, publicKey: KeyObject): boolean =>
  verify(null, Buffer.from(message), publicKey, Buffer.from(signature, 'base64'));

// ------------------------------------------------------------------------------------------ Shamir

export interface Share {
  /** The holder's x (site index + 1; never 0, where the secret sits). */
  readonly x: number;
  readonly y: bigint;
}

const mod = (a: bigint, p: bigint): bigint => ((a % p) + p) % p;

function modPow(base: bigint, exp: bigint, p: bigint): bigint {
  let result = 1n;
  let b = mod(base, p);
  let e = exp;
  while (e > 0n) {
    if (e & 1n) result = (result * b) % p;
    b = (b * b) % p;
    e >>= 1n;
  }
  return result;
}

const toBigInt = (bytes: Buffer): bigint => BigInt(`0x${bytes.toString('hex') || '0'}`);
function toBytes(value: bigint, length: number): Buffer {
  const hex = value.toString(16).padStart(length * 2, '0');
  if (hex.length > length * 2) throw new Error('a rebuilt secret does not fit its length: wrong shares');
  return Buffer.from(hex, 'hex');
}

/** t-of-n shares of `secret` for holders x = 1..n; `random` gives the polynomial's coefficients. */
export function shamirSplit(
  secret: Buffer,
  holders: readonly number[],
  threshold: number,
  random: (bytes: number) => Buffer = randomBytes,
): Share[] {
  if (threshold < 1 || threshold > holders.length)
    throw new Error(`a threshold of ${threshold} needs between 1 and ${holders.length} holders`);
  const coefficients = [toBigInt(secret)];
  for (let i = 1; i < threshold; i++) coefficients.push(mod(toBigInt(random(66)), SHAMIR_PRIME));
  return holders.map((x) => {
    let y = 0n;
    for (let i = coefficients.length - 1; i >= 0; i--)
      y = (y * BigInt(x) + (coefficients[i] as bigint)) % SHAMIR_PRIME;
    return { x, y };
  });
}

/** The secret from any `threshold` distinct shares (Lagrange at 0); more are ignored. */
export function shamirCombine(shares: readonly Share[], threshold: number, length = 32): Buffer {
  const used = [...new Map(shares.map((s) => [s.x, s])).values()].slice(0, threshold);
  if (used.length < threshold)
    throw new Error(`${used.length} distinct shares cannot rebuild a secret that needs ${threshold}`);
  let secret = 0n;
  for (const { x: xi, y } of used) {
    let num = 1n;
    let den = 1n;
    for (const { x: xj } of used) {
      if (xj === xi) continue;
      num = mod(num * -BigInt(xj), SHAMIR_PRIME);
      den = mod(den * (BigInt(xi) - BigInt(xj)), SHAMIR_PRIME);
    }
    secret = mod(secret + y * num * modPow(den, SHAMIR_PRIME - 2n, SHAMIR_PRIME), SHAMIR_PRIME);
  }
  return toBytes(secret, length);
}

// ------------------------------------------------------------------------ shares on the wire

/** A holder's two shares of one site's secrets: of its mask key s_u and of its self-mask seed b_u. */
export interface SharePair {
  readonly key: Share;
  readonly seed: Share;
}

/**
 * A holder's pair of shares encrypted to it under the pair's channel key (AES-256-GCM: iv ‖ tag ‖
 * data), with `binding` (round, sender, holder) as additional data: a sealed pair moved to another
 * round or holder does not open.
 */
export function sealShare(pair: SharePair, key: Buffer, binding: string): string {
  const iv = randomBytes(12);
  const cipher = createCipheriv('aes-256-gcm', key, iv);
  cipher.setAAD(Buffer.from(binding));
  const text = `${pair.key.x}:${pair.key.y.toString(16)}:${pair.seed.y.toString(16)}`;
  const data = Buffer.concat([cipher.update(Buffer.from(text)), cipher.final()]);
  return Buffer.concat([iv, cipher.getAuthTag(), data]).toString('base64');
}

/** Opens a sealed pair; throws when it was not sealed under `key` and `binding`, or was altered. */
export function openShare(sealed: string, key: Buffer, binding: string): SharePair {
  const raw = Buffer.from(sealed, 'base64');
  const decipher = createDecipheriv('aes-256-gcm', key, raw.subarray(0, 12));
  decipher.setAAD(Buffer.from(binding));
  decipher.setAuthTag(raw.subarray(12, 28));
  const text = Buffer.concat([decipher.update(raw.subarray(28)), decipher.final()]).toString();
  const [x, keyY, seedY] = text.split(':');
  return {
    key: { x: Number(x), y: BigInt(`0x${keyY}`) },
    seed: { x: Number(x), y: BigInt(`0x${seedY}`) },
  };
}
