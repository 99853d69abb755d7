/**
 * `tensile export JOB` against the local control plane: the model status.model names is copied from
 * the output claim (its hostPath volume is on this machine) to a local folder, each file checked
 * against tensile.json; a tampered file, a job without a model and an existing model folder are refused
 * with the reason.
 */
import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { stringify } from 'yaml';
import { type LocalCluster, startCluster } from '../helpers/cluster.ts';
import { eventually } from '../helpers/eventually.ts';
import { setPath, validManifest } from '../helpers/job-builder.ts';

const root = fileURLToPath(new URL('../..', import.meta.url));
const NS = 'team-m';
const dir = mkdtempSync(join(tmpdir(), 'tensile-export-cluster-'));
let cluster: LocalCluster;

test.before(async () => {
  try {
    cluster = await startCluster({ nodes: 1 });
  } catch (error) {
    console.error(error);
    process.exit(1);
  }
});

test.after(async () => {
  await cluster?.[Symbol.asyncDispose]();
  rmSync(dir, { recursive: true, force: true });
});

async function kubectl(args: string[], input?: string): Promise<string> {
  const r = await cluster.kubectl(args, input);
  if (r.code !== 0) throw new Error(`kubectl ${args.join(' ')}: ${r.stderr}`);
  return r.stdout;
}

function tensileExport(args: string[]): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [join(root, 'operator/bin/tensile.mjs'), 'export', ...args], {
      cwd: dir,
      env: { ...process.env, KUBECONFIG: cluster.kubeconfigPath },
    });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (b: Buffer) => {
      stdout += b.toString();
    });
    child.stderr.on('data', (b: Buffer) => {
      stderr += b.toString();
    });
    child.on('close', (code) => resolve({ code, stdout, stderr }));
  });
}

/** A model folder as a worker writes it: the files and tensile.json with their SHA-256. */
function writeModel(folder: string): Record<string, Buffer> {
  mkdirSync(folder, { recursive: true });
  const files: Record<string, Buffer> = {
    'model.json': Buffer.from(JSON.stringify({ format: 'layers-model', weightsManifest: [] })),
    'weights.bin': Buffer.from(Float32Array.from([0.5, -1.25, 3]).buffer),
    'preprocessing.json': Buffer.from(JSON.stringify({ steps: [], modelInputShape: [784] })),
    'labels.json': Buffer.from(JSON.stringify(['a', 'b'])),
  };
  const sums: Record<string, { sha256: string }> = {};
  for (const [name, data] of Object.entries(files)) {
    writeFileSync(join(folder, name), data);
    sums[name] = { sha256: createHash('sha256').update(data).digest('hex') };
  }
  writeFileSync(
    join(folder, 'tensile.json'),
    JSON.stringify({ format: 'tensile-model/1', step: 900, files: sums }),
  );
  return files;
}

test('the model of a finished job comes out of its output claim, checked file by file', async () => {
  await kubectl(['create', 'namespace', NS]);
  await kubectl(
    ['apply', '-f', '-'],
    stringify({
      apiVersion: 'v1',
      kind: 'PersistentVolumeClaim',
      metadata: { name: 'models', namespace: NS },
      spec: { accessModes: ['ReadWriteOnce'], resources: { requests: { storage: '1Gi' } } },
    }),
  );
  await eventually('the claim is bound', async () => {
    const r = await cluster.kubectl(['-n', NS, 'get', 'pvc', 'models', '-o', 'jsonpath={.status.phase}']);
    return r.stdout === 'Bound';
  });
  const job = validManifest('fashion');
  setPath(job, 'metadata.namespace', NS);
  setPath(job, 'spec.output', { claimName: 'models', path: 'fashion/v1' });
  await kubectl(['apply', '-f', '-'], stringify(job));

  const none = await tensileExport(['fashion', '-n', NS]);
  assert.is(none.code, 1);
  assert.match(none.stderr, /has no model yet .* pvc:\/\/models\/fashion\/v1 when the job completes/);

  // What the completing worker leaves: the files on the claim, status.model pointing at them.
  const files = writeModel(join(cluster.claimFolder(NS, 'models'), 'fashion', 'v1'));
  await kubectl([
    '-n',
    NS,
    'patch',
    'trainingjob',
    'fashion',
    '--subresource=status',
    '--type=merge',
    '-p',
    JSON.stringify({
      status: {
        model: { uri: 'pvc://models/fashion/v1', step: 900, accuracy: 0.9, time: '2026-12-01T12:00:00Z' },
      },
    }),
  ]);
  const copied = await tensileExport(['fashion', '-n', NS]);
  assert.is(copied.code, 0, copied.stderr);
  const out = join(dir, 'fashion-model');
  assert.match(
    copied.stdout,
    /fashion-model \(step 900, accuracy 0\.9000, pvc:\/\/models\/fashion\/v1 via .*4 files checked\)/,
  );
  for (const [name, data] of Object.entries(files)) assert.equal(readFileSync(join(out, name)), data, name);

  const again = await tensileExport(['fashion', '-n', NS]);
  assert.is(again.code, 1);
  assert.match(again.stderr, /holds a model already/);

  writeFileSync(join(cluster.claimFolder(NS, 'models'), 'fashion', 'v1', 'weights.bin'), 'tampered');
  const bad = await tensileExport(['fashion', '-n', NS, '--out', join(dir, 'bad')]);
  assert.is(bad.code, 1);
  assert.match(bad.stderr, /weights\.bin: SHA-256 [0-9a-f]+, tensile\.json says/);
  assert.ok(existsSync(join(dir, 'bad', 'tensile.json')), 'what was copied stays for a look');
});

test.run();
