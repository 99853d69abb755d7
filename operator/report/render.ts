/**
 * The HTML of `tensile report`: one self-contained page (inline CSS, SVG, and uPlot for the
 * interactive charts; nothing from the network), readable offline and attachable to an issue as it
 * is. The static SVG charts need no script; the interactive ones add the time axis, smoothing, hover
 * values, the per-worker view, export, and several runs side by side.
 */
import { type FederationSummary, federationOf, type ReportData, type TimelineEvent } from './data.ts';
import { chartAssets, INTERACTIVE_CSS, interactiveSection, runCurves } from './interactive.ts';
import {
  escapeXml as esc,
  formatNumber,
  lineChart,
  type MarkShape,
  type Series,
  type TimelineMark,
  timelineChart,
  type VerticalMarker,
} from './svg.ts';

const WIDTH = 720;
const COLORS = {
  train: '#0969da',
  eval: '#bc4c00',
  world: '#8250df',
  lr: '#1a7f37',
  throughput: '#0969da',
  average: '#6e7781',
} as const;

interface KindStyle {
  readonly lane: number;
  readonly shape: MarkShape;
  readonly color: string;
  readonly label?: string;
}

const LANES = ['world', 'workers', 'checkpoints', 'run'];

/** How each kind of event is drawn; kinds not listed go to the workers lane as grey squares. */
const KINDS: Readonly<Record<string, KindStyle>> = {
  generation: { lane: 0, shape: 'circle', color: COLORS.world },
  // Unlabelled: the generation that follows says what the world became.
  rescale: { lane: 0, shape: 'diamond', color: '#bf8700' },
  rescaling: { lane: 0, shape: 'diamond', color: '#d4a72c' },
  kill: { lane: 1, shape: 'down', color: '#cf222e', label: 'kill' },
  leave: { lane: 1, shape: 'down', color: '#e16f24', label: 'leave' },
  join: { lane: 1, shape: 'up', color: '#1a7f37', label: 'join' },
  'nats-restart': { lane: 1, shape: 'square', color: '#0969da', label: 'nats restart' },
  failed: { lane: 1, shape: 'down', color: '#cf222e', label: 'failed' },
  'world-failed': { lane: 1, shape: 'down', color: '#cf222e', label: 'world failed' },
  signal: { lane: 1, shape: 'diamond', color: '#9a6700', label: 'signal' },
  'grace-exceeded': { lane: 1, shape: 'down', color: '#cf222e', label: 'grace exceeded' },
  checkpoint: { lane: 2, shape: 'tick', color: '#0969da' },
  'checkpoint-failed': { lane: 2, shape: 'tick', color: '#cf222e', label: 'failed' },
  resumed: { lane: 2, shape: 'square', color: '#6e7781', label: 'resumed' },
  completed: { lane: 3, shape: 'circle', color: '#1a7f37', label: 'completed' },
  stopping: { lane: 3, shape: 'diamond', color: '#9a6700', label: 'stopping' },
  stopped: { lane: 3, shape: 'square', color: '#9a6700', label: 'stopped' },
};

const styleOf = (kind: string): KindStyle =>
  KINDS[kind] ?? { lane: 1, shape: 'square', color: '#57606a', label: kind };

/** Events that change who trains, drawn as dashed lines across every chart. */
const MARKED = new Set(['kill', 'leave', 'join', 'rescale', 'resumed', 'nats-restart', 'world-failed']);

export function formatDuration(seconds: number | null): string {
  if (seconds === null || !Number.isFinite(seconds)) return '–';
  if (seconds < 60) return `${formatNumber(seconds)} s`;
  const s = Math.round(seconds);
  if (s < 3600) return `${Math.floor(s / 60)} min ${String(s % 60).padStart(2, '0')} s`;
  return `${Math.floor(s / 3600)} h ${String(Math.floor((s % 3600) / 60)).padStart(2, '0')} min`;
}

const pct = (v: number) => `${(v * 100).toFixed(2)} %`;

function card(label: string, value: string, note?: string): string {
  return `<div class="card"><div class="label">${esc(label)}</div><div class="value">${esc(value)}</div>${note === undefined ? '' : `<div class="note">${esc(note)}</div>`}</div>`;
}

/** A scripted event (`{action, step, worker?}`, as `tensile run --chaos` records them), or undefined. */
function scriptedEvent(item: unknown): string | undefined {
  if (item === null || typeof item !== 'object') return undefined;
  const { action, step, worker } = item as Record<string, unknown>;
  if (typeof action !== 'string' || typeof step !== 'number') return undefined;
  return `${action} at step ${step}${typeof worker === 'string' ? ` (${worker})` : ''}`;
}

/** Nested objects of unknown summary fields as dotted keys, so that new figures show without code. */
function flatten(value: unknown, prefix: string, out: [string, string][], depth = 0, maxDepth = 3): void {
  const events = Array.isArray(value) ? value.map(scriptedEvent) : [];
  if (events.length > 0 && events.every((e) => e !== undefined)) {
    out.push([prefix, events.join('; ')]);
    return;
  }
  if (value !== null && typeof value === 'object' && !Array.isArray(value) && depth < maxDepth) {
    for (const [k, v] of Object.entries(value))
      flatten(v, prefix === '' ? k : `${prefix}.${k}`, out, depth + 1, maxDepth);
    return;
  }
  const text =
    typeof value === 'number'
      ? formatNumber(value, 4)
      : typeof value === 'string'
        ? value
        : (JSON.stringify(value) ?? String(value));
  out.push([prefix, text.length > 160 ? `${text.slice(0, 157)}…` : text]);
}

function header(data: ReportData): string {
  const s = data.summary;
  const statusClass = s.status === 'completed' ? 'ok' : s.status === 'stopped' ? 'warn' : 'bad';
  const evalNote =
    s.eval === null ? undefined : `evaluation at step ${s.eval.step}, ${s.eval.samples} samples`;
  const lastGeneration = data.generations[data.generations.length - 1];
  const checkpoints = data.events.filter((e) => e.kind === 'checkpoint').length;
  const cards = [
    card('accuracy', s.eval === null ? '–' : pct(s.eval.accuracy), evalNote ?? 'no evaluation'),
    card(
      'loss',
      s.eval === null ? '–' : s.eval.loss.toFixed(4),
      s.eval === null ? 'no evaluation' : 'evaluation',
    ),
    card('steps', String(s.step), `epoch ${s.epoch}`),
    card('wall time', formatDuration(s.wallSeconds), `training ${formatDuration(s.trainSeconds)}`),
    card(
      'throughput',
      s.samplesPerSecond === null ? '–' : `${formatNumber(s.samplesPerSecond)}`,
      'samples/s, last session',
    ),
    card(
      'workers',
      String(s.workers),
      lastGeneration === undefined
        ? undefined
        : `${data.generations.length} generation${data.generations.length === 1 ? '' : 's'}, last of ${lastGeneration.worldSize}`,
    ),
    card('backend', s.backend),
    card(
      'checkpoints',
      String(checkpoints),
      s.checkpoint === null ? 'none at the end' : `last at step ${s.checkpoint.step}`,
    ),
  ];
  const facts: [string, string][] = [];
  if (s.checkpoint !== null) facts.push(['last checkpoint', s.checkpoint.path]);
  if (s.resumedFrom !== null)
    facts.push(['resumed from', `step ${s.resumedFrom.step}: ${s.resumedFrom.path}`]);
  const federated = federationOf(s.extra) !== null;
  for (const [key, value] of Object.entries(s.extra))
    if (!federated || !FEDERATION_KEYS.has(key)) flatten(value, key, facts);
  const list =
    facts.length === 0
      ? ''
      : `<dl class="facts">${facts.map(([k, v]) => `<dt>${esc(k)}</dt><dd>${esc(v)}</dd>`).join('')}</dl>`;
  return `<header>
<h1>${esc(s.job)} <span class="status ${statusClass}">${esc(s.status)}</span></h1>
<p class="reason">${esc(s.reason)}</p>
<div class="cards">${cards.join('')}</div>
${list}
</header>`;
}

/** The spec of each run as rows of `field → value`; several runs: one column each, differences marked. */
export function hyperparameterTable(
  specs: readonly (Readonly<Record<string, unknown>> | null)[],
  names: readonly string[],
): string {
  const flat = specs.map((spec) => {
    const rows: [string, string][] = [];
    // A spec nests deeper than a summary (checkpoint.volume.claimTemplate.size).
    if (spec !== null) flatten(spec, '', rows, 0, 6);
    return new Map(rows);
  });
  const keys = [...new Set(flat.flatMap((m) => [...m.keys()]))].sort();
  if (keys.length === 0)
    return '<p class="no-data">No job.json beside the checkpoints: the hyperparameters are unknown.</p>';
  const head =
    names.length > 1
      ? `<tr><th>field</th>${names.map((n) => `<th>${esc(n)}</th>`).join('')}</tr>`
      : '<tr><th>field</th><th>value</th></tr>';
  const body = keys
    .map((k) => {
      const values = flat.map((m) => m.get(k) ?? '–');
      const differs = names.length > 1 && new Set(values).size > 1;
      return `<tr${differs ? ' class="differs"' : ''}><td><code>${esc(k)}</code></td>${values.map((v) => `<td>${esc(v)}</td>`).join('')}</tr>`;
    })
    .join('');
  return `<table class="params"><thead>${head}</thead><tbody>${body}</tbody></table>`;
}

function section(title: string, body: string, note?: string): string {
  return `<section><h2>${esc(title)}</h2>${note === undefined ? '' : `<p class="muted">${esc(note)}</p>`}${body}</section>`;
}

function figure(title: string, chart: string, empty: boolean, emptyNote: string): string {
  const body = empty ? `<p class="no-data">${esc(emptyNote)}</p>` : chart;
  return `<figure><figcaption>${esc(title)}</figcaption>${body}</figure>`;
}

function markersOf(data: ReportData): VerticalMarker[] {
  const markers: VerticalMarker[] = [];
  // One line per step: a kill, the rescale and the generation it caused would draw three on top of
  // each other; the first listed wins.
  const add = (marker: VerticalMarker) => {
    if (!markers.some((m) => m.x === marker.x)) markers.push(marker);
  };
  for (const e of data.events)
    if (MARKED.has(e.kind) && e.step !== null)
      add({ x: e.step, color: styleOf(e.kind).color, title: `${e.kind} at step ${e.step}: ${e.detail}` });
  for (const g of data.generations.slice(1))
    add({
      x: g.firstStep,
      color: COLORS.world,
      title: `generation ${g.generation}: ${g.worldSize} workers from step ${g.firstStep}`,
    });
  return markers;
}

function timelineMarks(data: ReportData): TimelineMark[] {
  const marks: TimelineMark[] = [];
  for (const e of data.events) {
    if (e.kind === 'generation' || e.step === null) continue;
    const style = styleOf(e.kind);
    marks.push({
      x: e.step,
      lane: style.lane,
      shape: style.shape,
      color: style.color,
      title: `${e.kind} at step ${e.approximate ? '≈' : ''}${e.step}${e.worker === null ? '' : ` (${e.worker})`}: ${e.detail}`,
      ...(style.label === undefined ? {} : { label: style.label }),
    });
  }
  // Generations last, so that a rescale at the same step does not hide them.
  for (const g of data.generations)
    marks.push({
      x: g.firstStep,
      lane: 0,
      shape: 'circle',
      color: COLORS.world,
      title: `generation ${g.generation}: ${g.worldSize} workers, global batch ${g.globalBatch ?? '?'}, learning rate ${g.learningRate === null ? '?' : formatNumber(g.learningRate, 4)}, from step ${g.firstStep}`,
      label: `${g.worldSize} worker${g.worldSize === 1 ? '' : 's'}`,
    });
  return marks;
}

const CHECKPOINTS_LISTED = 12;

/** fashion-mnist-mlp-worker-0 is worker-0 in a report about fashion-mnist-mlp. */
const shortWorker = (worker: string | null, job: string) =>
  worker === null ? '' : worker.startsWith(`${job}-`) ? worker.slice(job.length + 1) : worker;

function eventTable(data: ReportData): string {
  const start = Math.min(
    ...[...data.events.map((e) => e.time), ...data.progress.map((p) => p.time)].filter(
      (t): t is number => t !== null,
    ),
  );
  const checkpoints = data.events.filter((e) => e.kind === 'checkpoint');
  // Dozens of routine checkpoints would bury the kills and rescales; the timeline still shows each.
  const folded = checkpoints.length > CHECKPOINTS_LISTED;
  const rows = data.events
    .filter((e) => !(folded && e.kind === 'checkpoint'))
    .map((e: TimelineEvent) => {
      const style = styleOf(e.kind);
      const time =
        e.time === null || !Number.isFinite(start)
          ? '–'
          : `<span title="${esc(new Date(e.time).toISOString())}">+${formatDuration((e.time - start) / 1000)}</span>`;
      const step = e.step === null ? '–' : `${e.approximate ? '≈' : ''}${e.step}`;
      return `<tr><td class="num">${time}</td><td class="num">${esc(step)}</td><td><span class="kind" style="border-color:${esc(style.color)};color:${esc(style.color)}">${esc(e.kind)}</span></td><td>${esc(shortWorker(e.worker, data.summary.job))}</td><td>${esc(e.detail)}</td></tr>`;
    });
  const steps = checkpoints.map((c) => c.step).filter((s): s is number => s !== null);
  const note = folded
    ? `<p class="muted">${checkpoints.length} checkpoints, steps ${Math.min(...steps)} to ${Math.max(...steps)}, are on the timeline and not listed here.</p>`
    : '';
  if (rows.length === 0) return `${note}<p class="no-data">No events were recorded.</p>`;
  return `${note}<table class="events"><thead><tr><th class="num">time</th><th class="num">step</th><th>event</th><th>worker</th><th>detail</th></tr></thead><tbody>${rows.join('')}</tbody></table>`;
}

/** The newest per-worker figures of the run: who computes how fast, and who waits for whom. */
function workerTable(data: ReportData): string {
  const last = [...data.progress].reverse().find((p) => p.workers !== null && p.workers.length > 0);
  if (last?.workers == null) return '';
  const rows = last.workers.map(
    (w) =>
      `<tr><td>${esc(w.worker)}</td><td class="num">${w.batch}</td><td class="num">${esc(formatNumber(w.samplesPerSecond))}</td><td class="num">${esc(formatNumber(w.waitSeconds * 1000))}</td></tr>`,
  );
  return `<p class="muted">At step ${last.step}: each worker's share of the global batch, its compute throughput (waiting excluded) and how long it waited for the others per step (moving averages).</p><table><thead><tr><th>worker</th><th class="num">batch</th><th class="num">compute samples/s</th><th class="num">wait ms/step</th></tr></thead><tbody>${rows.join('')}</tbody></table>`;
}

function generationTable(data: ReportData): string {
  if (data.generations.length === 0) return '';
  // AdaScale runs record their gain: a column only when some generation has one.
  const gains = data.generations.some((g) => g.gain !== null);
  const gainCell = (gain: number | null) =>
    gains ? `<td class="num">${gain === null ? '–' : esc(formatNumber(gain, 3))}</td>` : '';
  const rows = data.generations.map(
    (g) =>
      `<tr><td class="num">${g.generation}</td><td class="num">${g.worldSize}</td><td class="num">${g.globalBatch ?? '–'}</td><td class="num">${g.learningRate === null ? '–' : esc(formatNumber(g.learningRate, 4))}</td><td class="num">${g.firstStep}</td>${gainCell(g.gain)}</tr>`,
  );
  const gainHead = gains ? '<th class="num">mean AdaScale gain</th>' : '';
  return `<table><thead><tr><th class="num">generation</th><th class="num">workers</th><th class="num">global batch</th><th class="num">learning rate</th><th class="num">first step</th>${gainHead}</tr></thead><tbody>${rows.join('')}</tbody></table>`;
}

/** AdaScale: training loss against scale-invariant iterations, the axis its schedule runs on. */
function scaleInvariantFigure(data: ReportData): string {
  const points = data.progress.flatMap((p) =>
    p.progress === null || p.loss === null ? [] : [{ x: p.progress, y: p.loss }],
  );
  if (points.length === 0) return '';
  const end = Math.max(1, ...points.map((p) => p.x));
  return figure(
    'Loss by scale-invariant iterations (AdaScale)',
    lineChart({
      width: WIDTH,
      xDomain: [0, end],
      xLabel: 'scale-invariant iterations',
      // Rescale markers are at steps, not on this axis.
      markers: [],
      ariaLabel: 'loss by scale-invariant iterations',
      series: [{ name: 'training loss', color: COLORS.train, style: 'line', points }],
      yZero: true,
    }),
    false,
    '',
  );
}

function auditTable(data: ReportData): string {
  const epochs = data.summary.epochs;
  if (epochs.length === 0) return '<p class="no-data">No sample audit in summary.json.</p>';
  const wrong = epochs.filter((e) => e.complete && (e.duplicated !== 0 || e.missing !== 0));
  const complete = epochs.filter((e) => e.complete).length;
  const verdict =
    wrong.length === 0
      ? `<p class="verdict ok">Each of the ${complete} complete epoch${complete === 1 ? '' : 's'} saw every training sample exactly once.</p>`
      : `<p class="verdict bad">${wrong.length} of ${complete} complete epoch${complete === 1 ? '' : 's'} saw samples twice or missed some.</p>`;
  const rows = epochs.map((e) => {
    const bad = e.complete && (e.duplicated !== 0 || e.missing !== 0);
    const cls = bad ? ' class="bad"' : e.complete ? '' : ' class="partial"';
    const cell = (v: number) => `<td class="num${v !== 0 && e.complete ? ' nonzero' : ''}">${v}</td>`;
    return `<tr${cls}><td class="num">${e.epoch}</td><td class="num">${e.seen}</td>${cell(e.duplicated)}${cell(e.missing)}<td>${e.complete ? (bad ? 'duplicates or gaps' : 'exactly once') : 'in progress'}</td></tr>`;
  });
  return `${verdict}<table class="audit"><thead><tr><th class="num">epoch</th><th class="num">seen</th><th class="num">duplicated</th><th class="num">missing</th><th>check</th></tr></thead><tbody>${rows.join('')}</tbody></table>`;
}

/** Inline scripts and styles only; nothing is loaded from anywhere; downloads are data: links. */
const CSP = "default-src 'none'; style-src 'unsafe-inline'; script-src 'unsafe-inline'; img-src data:";

const CSS = `
table.params td:first-child { white-space: nowrap; }
tr.differs td { background: #fff8c5; }
:root { color-scheme: light; }
* { box-sizing: border-box; }
body { margin: 0; background: #fff; color: #24292f; font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, "Noto Sans", "DejaVu Sans", sans-serif; }
main { max-width: 760px; margin: 0 auto; padding: 24px 20px 40px; }
h1 { font-size: 24px; margin: 0 0 4px; display: flex; align-items: center; gap: 10px; flex-wrap: wrap; word-break: break-all; }
h2 { font-size: 17px; margin: 32px 0 8px; padding-bottom: 4px; border-bottom: 1px solid #d0d7de; }
.status { font-size: 12px; font-weight: 600; padding: 2px 8px; border-radius: 10px; text-transform: uppercase; letter-spacing: .04em; }
.status.ok { background: #dafbe1; color: #1a7f37; }
.status.warn { background: #fff8c5; color: #9a6700; }
.status.bad { background: #ffebe9; color: #cf222e; }
.reason { margin: 0 0 14px; color: #57606a; }
.cards { display: grid; grid-template-columns: repeat(auto-fill, minmax(160px, 1fr)); gap: 8px; }
.card { border: 1px solid #d0d7de; border-radius: 6px; padding: 8px 10px; }
.card .label { font-size: 11px; color: #57606a; text-transform: uppercase; letter-spacing: .04em; }
.card .value { font-size: 19px; font-weight: 600; font-variant-numeric: tabular-nums; }
.card .note { font-size: 11px; color: #57606a; }
.facts { display: grid; grid-template-columns: max-content 1fr; gap: 2px 12px; margin: 12px 0 0; font-size: 13px; }
.facts dt { color: #57606a; }
.facts dd { margin: 0; word-break: break-all; font-family: ui-monospace, "DejaVu Sans Mono", monospace; font-size: 12px; }
figure { margin: 14px 0 0; }
figcaption { font-weight: 600; font-size: 13px; margin-bottom: 2px; }
svg { display: block; max-width: 100%; height: auto; font-family: inherit; }
.muted { color: #57606a; font-size: 13px; margin: 4px 0; }
.no-data { color: #57606a; font-style: italic; border: 1px dashed #d0d7de; border-radius: 6px; padding: 10px 12px; margin: 4px 0; }
table { border-collapse: collapse; width: 100%; font-size: 13px; margin: 8px 0; }
th, td { text-align: left; padding: 4px 8px; border-bottom: 1px solid #eaeef2; vertical-align: top; }
th { color: #57606a; font-weight: 600; border-bottom: 1px solid #d0d7de; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
table.events td:last-child { word-break: break-word; }
table.events td:nth-child(4) { white-space: nowrap; }
.kind { display: inline-block; border: 1px solid; border-radius: 10px; padding: 0 7px; font-size: 12px; white-space: nowrap; }
tr.bad td { background: #ffebe9; color: #82071e; }
td.nonzero { font-weight: 700; color: #cf222e; }
tr.partial td { color: #8c959f; }
.verdict { margin: 4px 0; font-weight: 600; }
.verdict.ok { color: #1a7f37; }
.verdict.bad { color: #cf222e; }
footer { margin-top: 36px; color: #57606a; font-size: 12px; border-top: 1px solid #d0d7de; padding-top: 8px; word-break: break-all; }
`;

/** The report page of one run. `now` is the time printed at the bottom (for reproducible output). */
export function renderReport(data: ReportData, now: Date = new Date()): string {
  const s = data.summary;
  const lastStep = Math.max(
    s.step,
    ...data.progress.map((p) => p.step),
    ...data.evals.map((e) => e.step),
    ...data.events.map((e) => e.step ?? 0),
    ...data.generations.map((g) => g.firstStep),
    1,
  );
  const xDomain: [number, number] = [0, lastStep];
  const markers = markersOf(data);
  const common = { width: WIDTH, xDomain, xLabel: 'step', markers };
  const train = (pick: (p: ReportData['progress'][number]) => number | null) =>
    data.progress.flatMap((p) => {
      const y = pick(p);
      return y === null ? [] : [{ x: p.step, y }];
    });
  const evals = (pick: (e: ReportData['evals'][number]) => number | null, what: string) =>
    data.evals.flatMap((e) => {
      const y = pick(e);
      return y === null ? [] : [{ x: e.step, y, title: `step ${e.step}: ${what} ${formatNumber(y, 4)}` }];
    });

  const lossSeries: Series[] = [
    {
      name: 'training loss (mean since last point)',
      color: COLORS.train,
      style: 'line',
      points: train((p) => p.loss),
    },
    {
      name: 'evaluation loss',
      color: COLORS.eval,
      style: 'line',
      dots: true,
      points: evals((e) => e.loss, 'loss'),
    },
  ];
  const accuracySeries: Series[] = [
    { name: 'training accuracy', color: COLORS.train, style: 'line', points: train((p) => p.accuracy) },
    {
      name: 'evaluation accuracy',
      color: COLORS.eval,
      style: 'line',
      dots: true,
      points: evals((e) => e.accuracy, 'accuracy'),
    },
  ];
  const worldPoints = data.generations.map((g) => ({ x: g.firstStep, y: g.worldSize }));
  const lrPoints = train((p) => p.learningRate);
  const lrSeries: Series = {
    name: 'learning rate',
    color: COLORS.lr,
    style: 'step',
    points:
      lrPoints.length > 0
        ? lrPoints
        : data.generations.flatMap((g) =>
            g.learningRate === null ? [] : [{ x: g.firstStep, y: g.learningRate }],
          ),
  };
  const throughput = train((p) => p.samplesPerSecond);
  const throughputSeries: Series[] = [
    { name: 'samples/s', color: COLORS.throughput, style: 'line', points: throughput },
  ];
  if (s.samplesPerSecond !== null && throughput.length > 1)
    throughputSeries.push({
      name: `session average ${formatNumber(s.samplesPerSecond)}`,
      color: COLORS.average,
      style: 'line',
      dashed: true,
      points: [
        { x: 0, y: s.samplesPerSecond },
        { x: lastStep, y: s.samplesPerSecond },
      ],
    });
  const noProgress = data.progress.length === 0;
  const federation = federationOf(s.extra);
  const progressNote = 'No progress lines in the worker logs.';

  const curves = [
    figure(
      'Loss',
      lineChart({ ...common, ariaLabel: 'loss by step', series: lossSeries, yZero: true }),
      lossSeries.every((x) => x.points.length === 0),
      'No loss was logged.',
    ),
    figure(
      'Accuracy',
      lineChart({ ...common, ariaLabel: 'accuracy by step', series: accuracySeries }),
      accuracySeries.every((x) => x.points.length === 0),
      'No accuracy was logged.',
    ),
    scaleInvariantFigure(data),
  ].join('');
  const world = [
    figure(
      'World size (workers)',
      lineChart({
        ...common,
        height: 150,
        ariaLabel: 'world size by step',
        series: [{ name: 'workers', color: COLORS.world, style: 'step', points: worldPoints }],
        yZero: true,
        yInclude: [Math.max(2, ...worldPoints.map((p) => p.y + 1))],
        yInteger: true,
      }),
      worldPoints.length === 0,
      'No generations recorded.',
    ),
    figure(
      'Learning rate',
      lineChart({
        ...common,
        height: 150,
        ariaLabel: 'learning rate by step',
        series: [lrSeries],
        yZero: true,
      }),
      lrSeries.points.length === 0,
      'No learning rate recorded.',
    ),
  ].join('');
  const throughputFigure = figure(
    'Throughput',
    lineChart({ ...common, ariaLabel: 'samples per second by step', series: throughputSeries, yZero: true }),
    throughput.length === 0,
    noProgress ? progressNote : 'No throughput was logged.',
  );
  const marks = timelineMarks(data);
  const timeline = `${
    marks.length === 0
      ? '<p class="no-data">No events were recorded.</p>'
      : timelineChart({
          width: WIDTH,
          xDomain,
          xLabel: 'step',
          lanes: LANES,
          marks,
          ariaLabel: 'events by step',
        })
  }${generationTable(data)}${eventTable(data)}`;

  const sources = [
    `${data.logFiles.length} worker log${data.logFiles.length === 1 ? '' : 's'}`,
    `${data.workers.length} worker${data.workers.length === 1 ? '' : 's'} seen`,
    `${data.progress.length} progress points`,
    `${data.evals.length} evaluations`,
  ];
  if (data.skippedLines > 0)
    sources.push(`${data.skippedLines} unreadable line${data.skippedLines === 1 ? '' : 's'} skipped`);

  return page(
    `${s.job}: ${s.status}`,
    `${header(data)}
${section('Explore', interactiveSection([runCurves(data, s.job)]), 'Hover a chart for its values; drag to zoom, double-click to reset. Curves are exported as logged (unsmoothed).')}
${federation === null ? '' : section('Federation', federationSection(federation), 'Per round: accuracy after the aggregation (the first site), the bytes the site leaders wrote, and the ε each site had spent under its own noise (RDP accountant).')}
${section('Hyperparameters', hyperparameterTable([data.spec], [s.job]), data.spec === null ? undefined : 'The spec the workers trained by (job.json beside the checkpoints).')}
${section('Training', curves, noProgress ? progressNote : 'Training curves are means over the steps since the previous point; evaluation is on held-out data.')}
${section('World', world)}
${section('Workers', workerTable(data) || '<p class="no-data">No per-worker figures (a world of one, or an older run).</p>')}
${section('Throughput', throughputFigure, data.evals.length > 0 ? 'Samples per second of training since the previous point; a point right after an evaluation includes its time, hence the dips.' : undefined)}
${section('Events', timeline, markers.length === 0 ? undefined : 'Dashed lines on the charts mark changes of the world: new generations, rescales, kills, joins, leaves, resumes.')}
${section('Sample audit', auditTable(data), 'Which training samples each epoch used, from the workers\u2019 audit files.')}
<footer>Generated by tensile report on ${esc(now.toISOString())} from ${esc(data.dir)} (${esc(sources.join(', '))}).</footer>`,
  );
}

/** Shown in their own section for a federated run, not among the facts. */
const FEDERATION_KEYS = new Set(['sites', 'rounds', 'secure', 'aggregation', 'privacy']);

const orDash = (v: number | null, digits: number): string => (v === null ? '–' : v.toFixed(digits));

/** A federated run: the sites, the aggregation, the ε spent, and one row per round. */
export function federationSection(f: FederationSummary): string {
  const names = (indices: readonly number[]) =>
    indices.map((i) => f.sites[i]?.name ?? String(i)).join(', ') || '–';
  const last = f.rounds[f.rounds.length - 1];
  const cards = [
    card('rounds', String(f.rounds.length), f.aggregation),
    card('sites', String(f.sites.length), f.sites.map((s) => `${s.name}×${s.workers}`).join(', ')),
    card(
      'secure aggregation',
      f.secure ? 'on' : 'off',
      f.secure ? 'double masking, signed keys' : 'plain sum',
    ),
    f.privacy === null
      ? card('differential privacy', 'off')
      : card(
          'ε spent (per site)',
          f.privacy.epsilon.toFixed(3),
          `δ ${f.privacy.delta}, clip ${f.privacy.clipNorm}, noise ×${f.privacy.noiseMultiplier}`,
        ),
    card('accuracy after the last round', last?.accuracy == null ? '–' : pct(last.accuracy)),
  ].join('');
  const rows = f.rounds
    .map(
      (r) =>
        `<tr><td>${r.round}</td><td>${r.step}</td><td>${orDash(r.accuracy, 4)}</td><td>${orDash(r.loss, 4)}</td><td>${orDash(r.seconds, 2)}</td><td>${r.bytes === null ? '–' : formatNumber(r.bytes)}</td><td>${esc(names(r.sites))}</td><td>${esc(r.dropped.length === 0 ? '–' : names(r.dropped))}</td><td>${r.agreed === null ? '–' : r.agreed ? 'yes' : 'no'}</td><td>${orDash(r.epsilon, 3)}</td></tr>`,
    )
    .join('');
  return `<div class="cards">${cards}</div><table><thead><tr><th>round</th><th>step</th><th>accuracy</th><th>loss</th><th>seconds</th><th>bytes</th><th>sites in the sum</th><th>dropped</th><th>same mean everywhere</th><th>ε</th></tr></thead><tbody>${rows}</tbody></table>`;
}

/** Names for runs side by side: the job names, with the folder where two runs share one. */
export function runNames(runs: readonly ReportData[]): string[] {
  const jobs = runs.map((r) => r.summary.job);
  return runs.map((r, i) => {
    const job = jobs[i] as string;
    const folder = r.dir.split('/').filter(Boolean).pop() ?? r.dir;
    return jobs.filter((j) => j === job).length > 1 ? `${job} (${folder})` : job;
  });
}

/** Two or more runs on one page: their figures, their curves overlaid, their specs side by side. */
export function renderComparison(runs: readonly ReportData[], now: Date = new Date()): string {
  const names = runNames(runs);
  const row = (r: ReportData, i: number) => {
    const s = r.summary;
    const cells = [
      `<td>${esc(names[i] as string)}</td>`,
      `<td><span class="status ${s.status === 'completed' ? 'ok' : s.status === 'stopped' ? 'warn' : 'bad'}">${esc(s.status)}</span></td>`,
      `<td class="num">${s.eval === null ? '–' : pct(s.eval.accuracy)}</td>`,
      `<td class="num">${s.eval === null ? '–' : s.eval.loss.toFixed(4)}</td>`,
      `<td class="num">${s.step}</td>`,
      `<td class="num">${esc(formatDuration(s.wallSeconds))}</td>`,
      `<td class="num">${s.samplesPerSecond === null ? '–' : esc(formatNumber(s.samplesPerSecond))}</td>`,
      `<td class="num">${s.workers}</td>`,
      `<td>${esc(s.backend)}</td>`,
      `<td><code>${esc(r.dir)}</code></td>`,
    ];
    return `<tr>${cells.join('')}</tr>`;
  };
  const table = `<table><thead><tr><th>run</th><th>status</th><th>accuracy</th><th>loss</th><th>steps</th><th>wall time</th><th>samples/s</th><th>workers</th><th>backend</th><th>folder</th></tr></thead><tbody>${runs.map(row).join('')}</tbody></table>`;
  const curves = runs.map((r, i) => runCurves(r, names[i] as string));
  return page(
    names.join(' vs '),
    `<header><h1>${esc(`${runs.length} runs side by side`)}</h1></header>
${section('Runs', table)}
${section('Explore', interactiveSection(curves), 'Each run in its own colour: training as lines, evaluation as dots; hover for values, drag to zoom, double-click to reset. Elapsed time starts at each run\u2019s first point.')}
${section(
  'Hyperparameters',
  hyperparameterTable(
    runs.map((r) => r.spec),
    names,
  ),
  'Rows that differ between the runs are highlighted.',
)}
<footer>Generated by tensile report on ${esc(now.toISOString())} from ${esc(runs.map((r) => r.dir).join(', '))}.</footer>`,
  );
}

/** The self-contained page around a report's body: styles and scripts inline, nothing fetched. */
function page(title: string, body: string): string {
  return `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta http-equiv="Content-Security-Policy" content="${CSP}">
<title>${esc(title)} – tensile report</title>
<style>${CSS}${INTERACTIVE_CSS}${chartAssets().css}</style>
</head>
<body>
<main>
${body}
</main>
</body>
</html>
`;
}
