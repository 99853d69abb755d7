/**
 * A federated round as the workers' federation audit left it (TENSILE_FEDERATION_AUDIT): each site's
 * plain delta and sample count, and the mean every rank applied — and how far those means are from the
 * plain sample-weighted mean, which secure aggregation must reproduce.
 */
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';

const floats = (file: string): Float32Array => {
  const bytes = readFileSync(file);
  return new Float32Array(bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength));
};

export interface AuditedRound {
  readonly samples: readonly number[];
  readonly deltas: readonly Float32Array[];
  /** One per rank that applied the round. */
  readonly means: readonly Float32Array[];
}

export function readAuditedRound(dir: string, round: number, sites: readonly string[]): AuditedRound {
  const samples = sites.map(
    (s) =>
      (JSON.parse(readFileSync(join(dir, `r${round}-samples-${s}.json`), 'utf8')) as { samples: number })
        .samples,
  );
  const deltas = sites.map((s) => floats(join(dir, `r${round}-delta-${s}.bin`)));
  const means = readdirSync(dir)
    .filter((f) => f.startsWith(`r${round}-mean-`))
    .map((f) => floats(join(dir, f)));
  return { samples, deltas, means };
}

/** The worst distance of any rank's applied mean from the plain sample-weighted mean of the deltas. */
export function worstMeanError({ samples, deltas, means }: AuditedRound): number {
  const total = samples.reduce((a, b) => a + b, 0);
  let worst = 0;
  for (let i = 0; i < (deltas[0]?.length ?? 0); i++) {
    let expected = 0;
    deltas.forEach((d, k) => {
      expected += (d[i] as number) * ((samples[k] as number) / total);
    });
    for (const mean of means) worst = Math.max(worst, Math.abs((mean[i] as number) - expected));
  }
  return worst;
}
