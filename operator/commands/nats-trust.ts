/**
 * `tensile nats-trust`: a fresh NATS operator, jobs' account and system account for decentralized JWT
 * authentication, as a trust directory (`--out DIR`) or as a Secret manifest on standard output
 * (`--secret NAME`) for the Helm chart's `nats.auth.trustSecret`. The bundled NATS reads `trust.conf`
 * from it; the operator reads the seeds (`tensile operator --nats-trust DIR`).
 */
import { stringify } from 'yaml';
import { createTrust, trustFiles, writeTrustDir } from '../controller/nats-credentials.ts';
import { type CommandIo, type CommandSpec, commandLine, UsageError } from './args.ts';

export const NATS_TRUST_COMMAND = {
  command: 'tensile nats-trust',
  synopsis: '(--out DIR | --secret NAME) [options]',
  description: `Creates the keys of NATS decentralized authentication for Tensile: an operator, the account every
job's user belongs to, and a system account. Writes them as a trust directory (for
tensile operator --nats-trust DIR and a nats-server that includes DIR/trust.conf) or prints a Secret
for the Helm chart (nats.auth.trustSecret). The seeds are secrets: keep them so.`,
  options: {
    out: { type: 'string', value: 'DIR', help: 'write the trust directory here' },
    secret: { type: 'string', value: 'NAME', help: 'print a Secret of this name holding the same files' },
    namespace: {
      type: 'string',
      short: 'n',
      value: 'NS',
      help: "the Secret's namespace (default: none set)",
    },
  },
} as const satisfies CommandSpec;

export async function runNatsTrust(argv: readonly string[], io: CommandIo): Promise<number> {
  const line = commandLine(NATS_TRUST_COMMAND, argv, io, (values) => {
    if (values.out === undefined && values.secret === undefined)
      throw new UsageError('say where the keys go: --out DIR or --secret NAME');
    return values;
  });
  if ('exit' in line) return line.exit;
  const { out, secret, namespace } = line.parsed;
  const trust = await createTrust();
  if (out !== undefined) {
    writeTrustDir(out, trust);
    io.err(`trust directory written to ${out}`);
  }
  if (secret !== undefined)
    io.out(
      stringify({
        apiVersion: 'v1',
        kind: 'Secret',
        metadata: { name: secret, ...(namespace === undefined ? {} : { namespace }) },
        type: 'Opaque',
        stringData: trustFiles(trust),
      }),
    );
  return 0;
}
