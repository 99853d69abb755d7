import { spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { runReport, writeReport } from '../../operator/commands/report.ts';
import { collectReport, ReportError } from '../../operator/report/collect.ts';
import { assembleReport, type ReportData } from '../../operator/report/data.ts';
import { renderReport } from '../../operator/report/render.ts';
import {
  escapeXml,
  formatTick,
  linearScale,
  lineChart,
  niceNumber,
  niceScale,
  timelineChart,
} from '../../operator/report/svg.ts';

const root = fileURLToPath(new URL('../..', import.meta.url));
const bin = join(root, 'operator/bin/tensile.mjs');

// --- svg helpers -------------------------------------------------------------------------------

test('niceNumber rounds to 1, 2, 5 times a power of ten', () => {
  const cases: [number, boolean, number][] = [
    [0.9, true, 1],
    [1.6, true, 2],
    [3.2, true, 5],
    [7.5, true, 10],
    [0.0023, true, 0.002],
    [1.1, false, 2],
    [4300, false, 5000],
    [0, true, 1],
  ];
  for (const [value, round, expected] of cases)
    assert.ok(Math.abs(niceNumber(value, round) - expected) < 1e-12, `${value} ${round}`);
});

test('niceScale widens the domain to round ticks', () => {
  const cases: [number, number, Parameters<typeof niceScale>[2], number[]][] = [
    [0, 4690, { count: 6 }, [0, 1000, 2000, 3000, 4000, 5000]],
    [0.48, 0.9, { count: 5 }, [0.4, 0.5, 0.6, 0.7, 0.8, 0.9]],
    [0.3, 1.46, { count: 5, zero: true }, [0, 0.5, 1, 1.5]],
    [1, 1, { integer: true }, [0, 1, 2]],
    [1, 1, { integer: true, zero: true }, [0, 1]],
    [0.001, 0.001, {}, [0, 0.0005, 0.001, 0.0015, 0.002]],
    [1, 4, { integer: true, count: 10 }, [1, 2, 3, 4]],
    [0, 4690, { count: 6, exact: true }, [0, 1000, 2000, 3000, 4000]],
  ];
  for (const [lo, hi, options, ticks] of cases)
    assert.equal(niceScale(lo, hi, options).ticks, ticks, `${lo}..${hi}`);
  const exact = niceScale(0, 4690, { exact: true });
  assert.equal([exact.min, exact.max], [0, 4690]);
  const wide = niceScale(0.48, 0.9);
  assert.ok(wide.min <= 0.48 && wide.max >= 0.9);
  // Non-finite input does not produce NaN ticks.
  assert.ok(niceScale(Number.NaN, Number.POSITIVE_INFINITY).ticks.every(Number.isFinite));
});

test('linearScale maps domain to range, also inverted', () => {
  const y = linearScale([0, 10], [200, 0]);
  assert.is(y(0), 200);
  assert.is(y(10), 0);
  assert.is(y(2.5), 150);
  assert.is(linearScale([3, 3], [0, 100])(3), 50);
});

test('formatTick shows the decimals the step needs', () => {
  const cases: [number, number, string][] = [
    [0, 0.5, '0'],
    [1.5, 0.5, '1.5'],
    [2000, 1000, '2000'],
    [0.0015, 0.0005, '0.0015'],
    [20000, 5000, '20k'],
    [12500, 2500, '12.5k'],
    [0.000004, 0.000002, '4e-6'],
  ];
  for (const [value, step, text] of cases) assert.is(formatTick(value, step), text, `${value}`);
});

test('escapeXml escapes markup and quotes', () => {
  assert.is(escapeXml(`<a href="x">&'`), '&lt;a href=&quot;x&quot;&gt;&amp;&#39;');
});

test('lineChart draws series, a step line to the end, and escapes names', () => {
  const svg = lineChart({
    ariaLabel: 'a <chart>',
    xDomain: [0, 100],
    series: [
      {
        name: 'loss <train>',
        color: '#00f',
        style: 'line',
        points: [0, 50, 100].map((x) => ({ x, y: x / 10 })),
      },
      { name: 'workers', color: '#f0f', style: 'step', points: [{ x: 0, y: 2 }] },
      { name: 'eval', color: '#f00', style: 'dots', points: [{ x: 50, y: 3, title: 'step 50 & more' }] },
    ],
  });
  assert.match(svg, /^<svg /);
  assert.match(svg, 'loss &lt;train&gt;');
  assert.match(svg, 'aria-label="a &lt;chart&gt;"');
  assert.match(svg, '<title>step 50 &amp; more</title>');
  assert.not.match(svg, '<train>');
  // The line starts at the left edge of the plot; the flat step line reaches the right edge.
  const lines = [...svg.matchAll(/<polyline points="([^"]+)"/g)].map((m) => m[1] as string);
  assert.is(lines.length, 2);
  assert.ok(lines[0]?.startsWith('78,'));
  const step = (lines[1] ?? '').split(' ').map((pair) => pair.split(',').map(Number));
  assert.equal(step[step.length - 1], [720 - 18, step[0]?.[1]]);
  assert.not.match(svg, 'NaN');
});

test('lineChart and timelineChart say "no data" for empty series', () => {
  const empty = lineChart({
    ariaLabel: 'x',
    series: [{ name: 'a', color: '#000', style: 'line', points: [] }],
  });
  assert.match(empty, 'no data');
  assert.not.match(empty, 'polyline');
  assert.match(timelineChart({ ariaLabel: 't', lanes: ['a'], marks: [] }), 'no events');
});

test('timelineChart places marks in lanes and drops colliding labels', () => {
  const svg = timelineChart({
    ariaLabel: 't',
    lanes: ['world', 'workers'],
    xDomain: [0, 1000],
    marks: [
      { x: 100, lane: 1, shape: 'down', color: '#f00', title: 'kill <w1>', label: 'kill' },
      { x: 101, lane: 1, shape: 'down', color: '#f00', title: 'kill w2', label: 'kill-again' },
      { x: 500, lane: 0, shape: 'circle', color: '#00f', title: 'g1', label: 'g1: 2 workers' },
    ],
  });
  assert.match(svg, '<title>kill &lt;w1&gt;</title>');
  assert.match(svg, '>kill<');
  assert.not.match(svg, '>kill-again<');
  assert.match(svg, '>g1: 2 workers<');
});

// --- data ---------------------------------------------------------------------------------------

const job = 'demo';
const summary = {
  job,
  status: 'completed',
  reason: 'completed 3 epochs',
  step: 300,
  epoch: 3,
  eval: { step: 300, epoch: 3, loss: 0.4, accuracy: 0.85, samples: 100 },
  wallSeconds: 75.2,
  trainSeconds: 70,
  samplesPerSecond: 900,
  backend: 'wasm',
  workers: 2,
  epochs: [
    { epoch: 0, seen: 1000, duplicated: 0, missing: 0, complete: true },
    { epoch: 1, seen: 1004, duplicated: 4, missing: 0, complete: true },
    { epoch: 2, seen: 500, duplicated: 0, missing: 500, complete: false },
  ],
  generations: [
    { generation: 0, worldSize: 2, globalBatch: 64, learningRate: 0.001, firstStep: 0 },
    { generation: 1, worldSize: 1, globalBatch: 64, learningRate: 0.001, firstStep: 150 },
  ],
  checkpoint: { step: 300, path: '/ck/ckpt-300' },
  resumedFrom: null,
  goodput: { ratio: 0.9 },
  chaos: [
    { action: 'kill', step: 40, worker: 'w-1', time: '2026-01-01T12:00:40Z' },
    { action: 'nats-restart', step: 90, time: '2026-01-01T12:01:30Z' },
  ],
};

const at = (seconds: number) => new Date(Date.UTC(2026, 0, 1, 12, 0, seconds)).toISOString();
const log = (worker: string, seconds: number, fields: Record<string, unknown>) =>
  JSON.stringify({ timestamp: at(seconds), level: 'info', message: 'm', job, worker, ...fields });
const progress = (step: number, loss: number) => ({
  event: 'progress',
  step,
  epoch: 0,
  cursor: 0,
  loss,
  accuracy: 0.5,
  samplesPerSecond: 1000,
  learningRate: 0.001,
  plannedSteps: 300,
});

const worker0 = [
  log('demo-worker-0', 0, {
    event: 'generation',
    generation: 0,
    worldSize: 2,
    rank: 0,
    globalBatch: 64,
    learningRate: 0.001,
    firstStep: 0,
  }),
  log('demo-worker-0', 10, progress(100, 1.0)),
  log('demo-worker-0', 12, { event: 'checkpoint', step: 100, path: '/ck/ckpt-100', writeMs: 12 }),
  log('demo-worker-0', 20, progress(150, 0.9)),
  log('demo-worker-0', 30, {
    event: 'generation',
    generation: 1,
    worldSize: 1,
    rank: 0,
    globalBatch: 64,
    learningRate: 0.001,
    firstStep: 150,
  }),
  log('demo-worker-0', 40, progress(200, 0.8)),
  log('demo-worker-0', 50, {
    event: 'eval',
    step: 300,
    epoch: 3,
    loss: 0.4,
    accuracy: 0.85,
    samples: 100,
    seconds: 1,
  }),
  log('demo-worker-0', 51, progress(300, 0.5)),
  log('demo-worker-0', 52, { event: 'completed', step: 300, reason: 'completed 3 epochs' }),
].join('\n');
const worker1 = [
  log('demo-worker-1', 0.5, {
    event: 'generation',
    generation: 0,
    worldSize: 2,
    rank: 1,
    globalBatch: 64,
    learningRate: 0.001,
    firstStep: 0,
  }),
  // The same step from a second rank, later: it wins.
  log('demo-worker-1', 11, progress(100, 0.95)),
  'Error: not json at all',
  log('demo-worker-1', 12, { event: 'progress', step: 'x' }),
  '',
].join('\n');
const eventsJsonl = [
  JSON.stringify({ time: at(25), type: 'kill', worker: 'demo-worker-1', detail: 'SIGKILL' }),
  JSON.stringify({ time: at(30), type: 'rescale', step: 150, detail: '2 → 1 workers' }),
  JSON.stringify({ time: at(31), type: 'weird-new-type', foo: 'bar' }),
  '{"truncated":',
].join('\n');

function runDir(): string {
  const dir = mkdtempSync(join(tmpdir(), 'tensile-report-'));
  writeFileSync(join(dir, 'summary.json'), JSON.stringify(summary));
  writeFileSync(join(dir, 'worker-0.log'), worker0);
  writeFileSync(join(dir, 'worker-1.log'), worker1);
  writeFileSync(join(dir, 'events.jsonl'), eventsJsonl);
  return dir;
}

test('collectReport dedupes progress by step, keeps unknown events, counts unreadable lines', () => {
  const data = collectReport(runDir());
  assert.equal(
    data.progress.map((p) => [p.step, p.loss]),
    [
      [100, 0.95],
      [150, 0.9],
      [200, 0.8],
      [300, 0.5],
    ],
  );
  // The garbage log line, the progress line without a step, the truncated events line.
  assert.is(data.skippedLines, 3);
  assert.equal(data.workers, ['demo-worker-0', 'demo-worker-1']);
  assert.equal(
    data.generations.map((g) => [g.generation, g.worldSize, g.time]),
    [
      [0, 2, Date.parse(at(0))],
      [1, 1, Date.parse(at(30))],
    ],
  );
  assert.equal(data.evals.length, 1);
  const kinds = data.events.map((e) => e.kind);
  for (const kind of ['generation', 'checkpoint', 'kill', 'rescale', 'weird-new-type', 'completed'])
    assert.ok(kinds.includes(kind), kind);
  const kill = data.events.find((e) => e.kind === 'kill');
  // No step in events.jsonl: the last progress step before it.
  assert.equal([kill?.step, kill?.approximate], [150, true]);
  assert.is(data.events.find((e) => e.kind === 'weird-new-type')?.detail, 'foo=bar');
  assert.equal(Object.keys(data.summary.extra), ['goodput', 'chaos']);
});

test('progress rolled back by a resume is dropped; a later session redoes those steps', () => {
  const lines = [
    log('w', 0, progress(100, 1)),
    log('w', 1, progress(120, 0.9)),
    log('w', 2, progress(140, 0.8)),
    // Resumed from the checkpoint at step 110: 120 and 140 never counted.
    log('w', 100, { event: 'resumed', step: 110, path: '/ck/ckpt-110' }),
    log('w', 101, progress(130, 0.85)),
  ].join('\n');
  const data = assembleReport({
    dir: '/run',
    summaryFile: '/run/summary.json',
    summaryText: JSON.stringify(summary),
    logs: [{ file: '/run/worker-0.log', text: lines }],
    eventsText: undefined,
  });
  assert.equal(
    data.progress.map((p) => p.step),
    [100, 130],
  );
});

test('AdaScale: mean gain per generation and loss by scale-invariant iterations', () => {
  const generation = (g: number, worldSize: number, firstStep: number, firstProgress: number) => ({
    event: 'generation',
    generation: g,
    worldSize,
    globalBatch: 32 * worldSize,
    learningRate: 0.01,
    firstStep,
    firstProgress,
  });
  const lines = [
    log('w', 0, generation(0, 4, 0, 0)),
    log('w', 1, { ...progress(50, 1.2), gain: 3, progress: 150 }),
    log('w', 2, { ...progress(100, 0.9), gain: 3, progress: 300 }),
    log('w', 3, generation(1, 2, 100, 300)),
    log('w', 4, { ...progress(150, 0.7), gain: 1.5, progress: 375 }),
  ].join('\n');
  const data = assembleReport({
    dir: '/run',
    summaryFile: '/run/summary.json',
    summaryText: JSON.stringify(summary),
    logs: [{ file: '/run/worker-0.log', text: lines }],
    eventsText: undefined,
  });
  assert.equal(
    data.generations.map((g) => g.gain),
    [3, 1.5],
  );
  const html = renderReport(data, new Date(0));
  assert.match(html, 'Loss by scale-invariant iterations');
  assert.match(html, 'mean AdaScale gain');
  assert.not.match(renderReport(built(), new Date(0)), 'scale-invariant');
});

test('per-worker throughput is a table; a balancing decision every rank logged is listed once', () => {
  const balance = {
    event: 'balance',
    generation: 1,
    step: 40,
    members: ['w0', 'w1'],
    perWorker: [90, 38],
    before: [64, 64],
    reason: 'drift',
  };
  const workers = [
    { worker: 'w0', batch: 90, samplesPerSecond: 4100, waitSeconds: 0.002 },
    { worker: 'w1', batch: 38, samplesPerSecond: 1700.5, waitSeconds: 0.0125 },
  ];
  const data = assembleReport({
    dir: '/run',
    summaryFile: '/run/summary.json',
    summaryText: JSON.stringify(summary),
    logs: [
      {
        file: '/run/worker-0.log',
        text: [log('w0', 1, balance), log('w0', 2, { ...progress(50, 0.5), workers })].join('\n'),
      },
      { file: '/run/worker-1.log', text: log('w1', 1, balance) },
    ],
    eventsText: undefined,
  });
  assert.is(data.events.filter((e) => e.kind === 'balance').length, 1);
  const html = renderReport(data, new Date(0));
  assert.match(html, 'batch split 64/64 → 90/38 (drift; w0, w1)');
  assert.match(html, '<td>w1</td><td class="num">38</td><td class="num">1,701</td><td class="num">12.5</td>');
  assert.match(renderReport(built(), new Date(0)), 'No per-worker figures');
});

test('a spec change a world took up is on the timeline, with what changed', () => {
  const lines = [
    log('w', 5, {
      event: 'spec-changed',
      generation: 2,
      step: 136,
      from: 1,
      to: 2,
      changed: ['replicas', 'evaluation'],
    }),
  ].join('\n');
  const data = assembleReport({
    dir: '/run',
    summaryFile: '/run/summary.json',
    summaryText: JSON.stringify(summary),
    logs: [{ file: '/run/worker-0.log', text: lines }],
    eventsText: undefined,
  });
  const change = data.events.find((e) => e.kind === 'spec-changed');
  assert.equal([change?.step, change?.detail], [136, 'spec revision 1 → 2: replicas, evaluation']);
});

test('collectReport: a missing summary.json is a ReportError naming it and tensile run', () => {
  const dir = mkdtempSync(join(tmpdir(), 'tensile-report-empty-'));
  try {
    collectReport(dir);
    assert.unreachable();
  } catch (error) {
    assert.instance(error, ReportError);
    assert.match((error as Error).message, 'summary.json');
    assert.match((error as Error).message, 'tensile run');
  }
  writeFileSync(join(dir, 'summary.json'), '{ nope');
  assert.throws(
    () => collectReport(dir),
    (e: unknown) => e instanceof ReportError && /not valid JSON/.test(String(e)),
  );
});

// --- render -------------------------------------------------------------------------------------

function built(): ReportData {
  return collectReport(runDir());
}

test('renderReport has every section, flags the bad audit row and escapes text', () => {
  const data = built();
  const html = renderReport(
    { ...data, summary: { ...data.summary, job: 'demo<script>alert(1)</script>', reason: 'a & b' } },
    new Date('2026-01-02T00:00:00Z'),
  );
  assert.match(html, /^<!doctype html>/);
  for (const title of ['Training', 'World', 'Throughput', 'Events', 'Sample audit'])
    assert.match(html, `<h2>${title}</h2>`);
  assert.match(html, 'demo&lt;script&gt;alert(1)&lt;/script&gt;');
  assert.not.match(html, '<script>alert');
  // In the embedded curves too, the name cannot close the script element.
  assert.not.match(html, 'alert(1)</script>');
  assert.match(html, 'demo\\u003cscript>alert(1)\\u003c/script>');
  assert.match(html, 'a &amp; b');
  assert.match(html, '85.00 %');
  // Nothing from the network.
  assert.not.match(html, /(src|href)="https?:/);
  assert.not.match(html, '@import');
  // Epoch 1 saw 4 samples twice: its row is flagged; epoch 2 is incomplete and is not.
  const rows = [
    ...html.matchAll(/<tr( class="(\w+)")?><td class="num">(\d+)<\/td><td class="num">(\d+)<\/td>/g),
  ];
  const audit = rows.filter((r) => ['1000', '1004', '500'].includes(r[4] as string));
  assert.equal(
    audit.map((r) => [r[3], r[2]]),
    [
      ['0', undefined],
      ['1', 'bad'],
      ['2', 'partial'],
    ],
  );
  assert.match(html, '1 of 2 complete epochs saw samples twice or missed some');
  assert.match(html, 'goodput.ratio');
  assert.match(html, 'kill at step 40 (w-1); nats-restart at step 90', 'scripted events read as a sentence');
  assert.match(html, 'weird-new-type');
  assert.match(html, '2026-01-02T00:00:00.000Z');
  assert.match(html, '3 unreadable lines skipped');
  assert.not.match(html, 'NaN');
});

test('renderReport: no progress gives short notes instead of charts', () => {
  const data = built();
  const html = renderReport({ ...data, progress: [], evals: [], events: [], generations: [] });
  assert.match(html, 'No progress lines in the worker logs.');
  assert.match(html, 'No loss was logged.');
  assert.match(html, 'No generations recorded.');
  assert.match(html, 'No events were recorded.');
  assert.not.match(html, 'NaN');
  assert.not.match(html, 'Infinity');
});

// --- a cluster job's volume, and runs side by side ------------------------------------------------

const spec = { replicas: 2, optimizer: { type: 'adam', learningRate: 0.001 }, batch: { global: 64 } };
const rank = (worker: string, seconds: number, step: number, samplesPerSecond: number, allReduceMs: number) =>
  log(worker, seconds, {
    event: 'rank-progress',
    step,
    rank: worker.endsWith('0') ? 0 : 1,
    steps: 50,
    samplesPerSecond,
    stepMs: 30,
    allReduceMs,
    generation: 0,
  });

/** What the workers of a cluster job leave on their checkpoint volume: logs/ and job.json, no summary. */
function volumeDir(learningRate = 0.001): string {
  const dir = mkdtempSync(join(tmpdir(), 'tensile-volume-'));
  mkdirSync(join(dir, 'logs'));
  writeFileSync(
    join(dir, 'job.json'),
    JSON.stringify({
      name: job,
      namespace: 'team-a',
      spec: { ...spec, optimizer: { type: 'adam', learningRate } },
    }),
  );
  writeFileSync(
    join(dir, 'logs', 'demo-worker-0.jsonl'),
    [
      worker0,
      rank('demo-worker-0', 10, 100, 500, 4),
      log('demo-worker-0', 1, { event: 'backend', backend: 'tensorflow' }),
    ].join('\n'),
  );
  writeFileSync(
    join(dir, 'logs', 'demo-worker-1.jsonl'),
    [worker1, rank('demo-worker-1', 11, 100, 250, 19)].join('\n'),
  );
  return dir;
}

test('a checkpoint volume: the summary from the logs, the spec from job.json, each rank in the per-worker view', () => {
  const data = collectReport(volumeDir());
  assert.ok(data.summaryFromLogs);
  assert.is(data.summary.job, 'demo');
  assert.is(data.summary.status, 'completed');
  assert.is(data.summary.reason, 'completed 3 epochs');
  assert.is(data.summary.step, 300);
  assert.is(data.summary.eval?.accuracy, 0.85);
  assert.is(data.summary.backend, 'tensorflow');
  // From the first progress line (step 100 at 11 s, the later of two ranks) to the last (51 s).
  assert.is(data.summary.wallSeconds, 40);
  assert.equal(data.spec, { ...spec });
  assert.equal(
    data.ranks.map((r) => [r.worker, r.samplesPerSecond, r.allReduceMs]),
    [
      ['demo-worker-0', 500, 4],
      ['demo-worker-1', 250, 19],
    ],
  );
  const html = renderReport(data);
  assert.match(html, '<h2>Hyperparameters</h2>');
  assert.match(html, '<code>optimizer.learningRate</code>');
  const embedded = /<script type="application\/json" id="t-data">(.*?)<\/script>/s.exec(html)?.[1] ?? '{}';
  const curves = JSON.parse(embedded) as { runs: { workers: Record<string, { allReduceMs: number[] }> }[] };
  assert.equal(curves.runs[0]?.workers['demo-worker-1']?.allReduceMs, [19]);
  // uPlot is inlined, not fetched.
  assert.match(html, 'uPlot');
  assert.not.match(html, /(src|href)="https?:/);
});

test('tensile report A B: the runs side by side, the settings that differ highlighted', async () => {
  const a = volumeDir(0.001);
  const b = volumeDir(0.01);
  const c = capture();
  assert.is(await runReport([a, b], c.io), 0, c.err.join('\n'));
  assert.equal(c.out, [join(a, 'compare.html')]);
  const html = readFileSync(join(a, 'compare.html'), 'utf8');
  assert.match(html, '2 runs side by side');
  const names = [a, b].map((d) => `demo (${d.split('/').pop()})`);
  for (const name of names) assert.match(html, name);
  const differing = [...html.matchAll(/<tr class="differs"><td><code>([^<]+)<\/code>/g)].map((m) => m[1]);
  assert.equal(differing, ['optimizer.learningRate']);
  const embedded = /<script type="application\/json" id="t-data">(.*?)<\/script>/s.exec(html)?.[1] ?? '{}';
  assert.equal(
    (JSON.parse(embedded) as { runs: { name: string }[] }).runs.map((r) => r.name),
    names,
  );
});

// --- command ------------------------------------------------------------------------------------

function capture() {
  const out: string[] = [];
  const err: string[] = [];
  return { io: { out: (l: string) => out.push(l), err: (l: string) => err.push(l) }, out, err };
}

test('writeReport writes DIR/report.html and returns its absolute path', () => {
  const dir = runDir();
  const file = writeReport(dir);
  assert.is(file, join(dir, 'report.html'));
  assert.match(readFileSync(file, 'utf8'), '<h2>Sample audit</h2>');
});

test('runReport: --out, usage errors exit 2, missing inputs exit 1', async () => {
  const dir = runDir();
  const target = join(mkdtempSync(join(tmpdir(), 'tensile-report-out-')), 'r.html');
  let c = capture();
  assert.is(await runReport([dir, '--out', target], c.io), 0);
  assert.equal(c.out, [target]);
  assert.match(readFileSync(target, 'utf8'), '<h1>');

  for (const args of [[], ['--bogus', dir], [dir, '--out']]) {
    c = capture();
    assert.is(await runReport(args, c.io), 2, args.join(' '));
    assert.match(c.err.join('\n'), 'usage: tensile report');
  }
  const empty = mkdtempSync(join(tmpdir(), 'tensile-report-none-'));
  mkdirSync(join(empty, 'sub'));
  c = capture();
  assert.is(await runReport([join(empty, 'sub')], c.io), 1);
  assert.is(c.err.length, 1);
  assert.match(c.err[0] as string, 'summary.json');
});

test('tensile report through the CLI: missing directory exits 1 naming summary.json; no DIR exits 2', () => {
  const missing = spawnSync(process.execPath, [bin, 'report', '/nonexistent/run'], {
    cwd: root,
    encoding: 'utf8',
  });
  assert.is(missing.status, 1, missing.stderr);
  assert.match(missing.stderr, 'summary.json');
  assert.match(missing.stderr, 'tensile run');
  const usage = spawnSync(process.execPath, [bin, 'report'], { cwd: root, encoding: 'utf8' });
  assert.is(usage.status, 2);
  assert.match(usage.stderr, 'usage: tensile report DIR');
  const dir = runDir();
  const ok = spawnSync(process.execPath, [bin, 'report', dir], { cwd: root, encoding: 'utf8' });
  assert.is(ok.status, 0, ok.stderr);
  assert.is(ok.stdout.trim(), join(dir, 'report.html'));
});

test('a federated run: its own section (rounds, sites in the sum, ε per round), not raw facts', () => {
  const dir = mkdtempSync(join(tmpdir(), 'tensile-report-fed-'));
  const round = (n: number, sites: number[], epsilon: number) => ({
    round: n,
    step: n * 15,
    accuracy: 0.5 + n / 100,
    loss: 1 - n / 10,
    seconds: 1.5,
    bytes: 600_000,
    sites,
    dropped: sites.length < 3 ? [2] : [],
    agreed: true,
    epsilon,
  });
  writeFileSync(
    join(dir, 'summary.json'),
    JSON.stringify({
      job: 'fed',
      status: 'completed',
      reason: '2 of 2 rounds',
      sites: [
        { name: 'north', workers: 2, samples: 100 },
        { name: 'south', workers: 1, samples: 50 },
        { name: 'east', workers: 1, samples: 70 },
      ],
      secure: true,
      aggregation: 'fedavg',
      privacy: { clipNorm: 1, noiseMultiplier: 1.1, delta: 1e-5, epsilon: 12.345 },
      rounds: [round(1, [0, 1, 2], 9.876), round(2, [0, 1], 12.345)],
      exitCodes: [0, 0, 0, 1],
      wallSeconds: 20,
    }),
  );
  const html = renderReport(collectReport(dir));
  assert.match(html, '<h2>Federation</h2>');
  assert.match(html, '<td>north, south</td><td>east</td>');
  assert.match(html, '<td>9.876</td>');
  assert.match(html, '12.345');
  assert.match(html, 'double masking, signed keys');
  assert.not.match(html, 'privacy.clipNorm', 'the federation is not flattened into the facts');
  assert.match(html, 'exitCodes');
  const plain = mkdtempSync(join(tmpdir(), 'tensile-report-plain-'));
  writeFileSync(join(plain, 'summary.json'), JSON.stringify({ job: 'plain', status: 'completed' }));
  assert.not.match(renderReport(collectReport(plain)), '<h2>Federation</h2>');
});

test.run();
