/**
 * The image config a Dockerfile's final stage declares: WORKDIR, USER, ENV, EXPOSE, ENTRYPOINT and
 * CMD (exec form). hack/images.sh writes it into the images it builds locally, and
 * test/unit/images.test.ts checks a built image against it. Only what the project's Dockerfiles use
 * is understood; anything else in the final stage that changes the config is an error.
 *
 *   node --import tsx hack/images/dockerfile.ts DOCKERFILE   prints the config as JSON
 */
import { readFileSync } from 'node:fs';

/** The `config` object of an OCI/Docker image config, as far as a Dockerfile sets it. */
export interface ImageConfig {
  Env: string[];
  WorkingDir: string;
  User?: string;
  Entrypoint?: string[];
  Cmd?: string[];
  ExposedPorts?: Record<string, Record<string, never>>;
}

export const DEFAULT_PATH = 'PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin';

export class DockerfileError extends Error {
  override readonly name = 'DockerfileError';
}

/** Instructions with line continuations joined and comments dropped. */
export function instructions(text: string): { keyword: string; rest: string }[] {
  const out: { keyword: string; rest: string }[] = [];
  let pending = '';
  for (const raw of text.split('\n')) {
    const line = raw.trim();
    if (pending === '' && (line === '' || line.startsWith('#'))) continue;
    if (line.startsWith('#')) continue;
    if (line.endsWith('\\')) {
      pending += `${line.slice(0, -1)} `;
      continue;
    }
    const full = (pending + line).trim();
    pending = '';
    const match = /^(\S+)\s*(.*)$/.exec(full);
    if (match === null) continue;
    out.push({ keyword: (match[1] ?? '').toUpperCase(), rest: match[2] ?? '' });
  }
  return out;
}

function execForm(keyword: string, rest: string): string[] {
  let parsed: unknown;
  try {
    parsed = JSON.parse(rest);
  } catch {
    throw new DockerfileError(`${keyword} ${rest}: only the exec (JSON array) form is supported`);
  }
  if (!Array.isArray(parsed) || !parsed.every((p) => typeof p === 'string'))
    throw new DockerfileError(`${keyword} ${rest}: expected a JSON array of strings`);
  return parsed;
}

function envPairs(rest: string): [string, string][] {
  const pairs: [string, string][] = [];
  const re = /([A-Za-z_][A-Za-z0-9_]*)=("(?:[^"\\]|\\.)*"|\S*)/g;
  for (const m of rest.matchAll(re)) {
    const value = m[2] ?? '';
    pairs.push([m[1] ?? '', value.startsWith('"') ? (JSON.parse(value) as string) : value]);
  }
  if (pairs.length === 0) throw new DockerfileError(`ENV ${rest}: only the KEY=VALUE form is supported`);
  return pairs;
}

/** The config of the final stage (everything after the last FROM). */
export function finalStageConfig(text: string): ImageConfig {
  const all = instructions(text);
  let start = -1;
  all.forEach((ins, i) => {
    if (ins.keyword === 'FROM') start = i;
  });
  if (start < 0) throw new DockerfileError('no FROM instruction');
  const env = new Map<string, string>([['PATH', DEFAULT_PATH.slice('PATH='.length)]]);
  const config: ImageConfig = { Env: [], WorkingDir: '/' };
  for (const { keyword, rest } of all.slice(start + 1)) {
    switch (keyword) {
      case 'WORKDIR':
        config.WorkingDir = rest.startsWith('/') ? rest : `${config.WorkingDir.replace(/\/$/, '')}/${rest}`;
        break;
      case 'USER':
        config.User = rest;
        break;
      case 'ENV':
        for (const [k, v] of envPairs(rest)) env.set(k, v);
        break;
      case 'EXPOSE':
        config.ExposedPorts ??= {};
        for (const port of rest.split(/\s+/))
          config.ExposedPorts[port.includes('/') ? port : `${port}/tcp`] = {};
        break;
      case 'ENTRYPOINT':
        config.Entrypoint = execForm(keyword, rest);
        break;
      case 'CMD':
        config.Cmd = execForm(keyword, rest);
        break;
      case 'COPY':
      case 'RUN':
      case 'ARG':
      case 'LABEL':
        break;
      default:
        throw new DockerfileError(`${keyword} in the final stage is not understood by hack/images`);
    }
  }
  config.Env = [...env].map(([k, v]) => `${k}=${v}`);
  return config;
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const file = process.argv[2];
  if (file === undefined) {
    process.stderr.write('usage: dockerfile.ts DOCKERFILE\n');
    process.exit(2);
  }
  process.stdout.write(`${JSON.stringify(finalStageConfig(readFileSync(file, 'utf8')))}\n`);
}
