/**
 * The interactive part of the report: uPlot (inlined from its npm package, so the page stays one
 * self-contained file), the runs' curves as JSON, and a small script for the x axis (step, elapsed
 * or wall-clock time), smoothing, hover values, the per-worker view and CSV/JSON export. One run or
 * several side by side (`tensile report A B`).
 */
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import type { ReportData } from './data.ts';

const require = createRequire(import.meta.url);

/** uPlot's script and stylesheet, read once. */
let assets: { js: string; css: string } | undefined;
export function chartAssets(): { js: string; css: string } {
  assets ??= {
    js: readFileSync(require.resolve('uplot/dist/uPlot.iife.min.js'), 'utf8'),
    css: readFileSync(require.resolve('uplot/dist/uPlot.min.css'), 'utf8'),
  };
  return assets;
}

/** What the page's script draws, per run: columns of numbers, null where a value was not logged. */
export interface RunCurves {
  readonly name: string;
  readonly dir: string;
  readonly train: {
    step: number[];
    time: (number | null)[];
    loss: (number | null)[];
    accuracy: (number | null)[];
    samplesPerSecond: (number | null)[];
    learningRate: (number | null)[];
    worldSize: (number | null)[];
  };
  readonly eval: {
    step: number[];
    time: (number | null)[];
    loss: (number | null)[];
    accuracy: (number | null)[];
  };
  readonly workers: Record<
    string,
    {
      step: number[];
      time: (number | null)[];
      samplesPerSecond: number[];
      stepMs: number[];
      allReduceMs: number[];
    }
  >;
}

const finite = (v: number | null) => (v === null || !Number.isFinite(v) ? null : v);

export function runCurves(data: ReportData, name: string): RunCurves {
  const workers: RunCurves['workers'] = {};
  for (const r of data.ranks) {
    const w = workers[r.worker] ?? { step: [], time: [], samplesPerSecond: [], stepMs: [], allReduceMs: [] };
    workers[r.worker] = w;
    w.step.push(r.step);
    w.time.push(r.time);
    w.samplesPerSecond.push(r.samplesPerSecond);
    w.stepMs.push(r.stepMs);
    w.allReduceMs.push(r.allReduceMs);
  }
  return {
    name,
    dir: data.dir,
    train: {
      step: data.progress.map((p) => p.step),
      time: data.progress.map((p) => p.time),
      loss: data.progress.map((p) => finite(p.loss)),
      accuracy: data.progress.map((p) => finite(p.accuracy)),
      samplesPerSecond: data.progress.map((p) => finite(p.samplesPerSecond)),
      learningRate: data.progress.map((p) => finite(p.learningRate)),
      worldSize: data.progress.map((p) => p.worldSize),
    },
    eval: {
      step: data.evals.map((e) => e.step),
      time: data.evals.map((e) => e.time),
      loss: data.evals.map((e) => finite(e.loss)),
      accuracy: data.evals.map((e) => finite(e.accuracy)),
    },
    workers,
  };
}

/** JSON inside a script element: `<` escaped, so no value can close the element. */
export function scriptJson(value: unknown): string {
  return JSON.stringify(value)
    .replace(/</g, '\\u003c')
    .replace(/\u2028/g, '\\u2028')
    .replace(/\u2029/g, '\\u2029');
}

export const INTERACTIVE_CSS = `
.controls { display: flex; flex-wrap: wrap; gap: 16px; align-items: center; margin: 8px 0 12px; font-size: 13px; }
.controls label { display: flex; gap: 6px; align-items: center; }
.controls button { font: inherit; padding: 3px 10px; border: 1px solid #d0d7de; border-radius: 6px; background: #f6f8fa; cursor: pointer; }
.uchart { margin: 6px 0 18px; }
.uchart h3 { margin: 0 0 4px; }
.u-legend { font-size: 12px; }
noscript p { color: #57606a; }
`;

/** The controls and chart containers; the script fills them from the embedded curves. */
export function interactiveSection(runs: readonly RunCurves[]): string {
  const { js } = chartAssets();
  return `<div class="controls">
<label>x axis <select id="t-x"><option value="step">step</option><option value="elapsed">elapsed time (s)</option><option value="clock">wall clock</option></select></label>
<label>smoothing <input id="t-smooth" type="range" min="0" max="0.99" step="0.01" value="0"><output id="t-smooth-v">0</output></label>
<button type="button" id="t-csv">download CSV</button>
<button type="button" id="t-json">download JSON</button>
</div>
<div id="t-charts"></div>
<noscript><p>The interactive charts need JavaScript; the static charts below do not.</p></noscript>
<script type="application/json" id="t-data">${scriptJson({ runs })}</script>
<script>${js}</script>
<script>${CLIENT}</script>`;
}

/** The page's script: plain JavaScript, run in the browser. */
const CLIENT = String.raw`(function () {
var data = JSON.parse(document.getElementById('t-data').textContent);
var runs = data.runs, many = runs.length > 1;
var palette = ['#0969da', '#cf222e', '#1a7f37', '#8250df', '#bf8700', '#1b7c83', '#e16f24', '#57606a'];
var xSel = document.getElementById('t-x'), smooth = document.getElementById('t-smooth');
var host = document.getElementById('t-charts'), plots = [];
function t0(run) {
  var ts = run.train.time.concat(run.eval.time).filter(function (t) { return t !== null; });
  return ts.length ? Math.min.apply(null, ts) : 0;
}
function xs(run, cols) {
  var mode = xSel.value, start = t0(run);
  if (mode === 'step') return cols.step;
  return cols.time.map(function (t) { return t === null ? null : mode === 'clock' ? t / 1000 : (t - start) / 1000; });
}
function ema(values, a) {
  if (!(a > 0)) return values;
  var out = [], s = null;
  for (var i = 0; i < values.length; i++) {
    var v = values[i];
    if (v === null) { out.push(null); continue; }
    s = s === null ? v : a * s + (1 - a) * v;
    out.push(s);
  }
  return out;
}
// Aligns series of different x onto one sorted x column, null where a series has no point.
function align(list) {
  var all = [];
  list.forEach(function (s) { s.x.forEach(function (x, i) { if (x !== null && s.y[i] !== null) all.push(x); }); });
  all = Array.from(new Set(all)).sort(function (a, b) { return a - b; });
  var at = new Map(all.map(function (x, i) { return [x, i]; }));
  var cols = list.map(function (s) {
    var c = new Array(all.length).fill(null);
    s.x.forEach(function (x, i) { if (x !== null && s.y[i] !== null) c[at.get(x)] = s.y[i]; });
    return c;
  });
  return [all].concat(cols);
}
function chart(title, list, yLabel) {
  list = list.filter(function (s) { return s.y.some(function (v) { return v !== null; }); });
  if (list.length === 0) return;
  var box = document.createElement('div');
  box.className = 'uchart';
  var h = document.createElement('h3');
  h.textContent = title;
  box.appendChild(h);
  host.appendChild(box);
  var mode = xSel.value;
  var opts = {
    width: Math.min(960, host.clientWidth || 900), height: 240,
    scales: { x: { time: mode === 'clock' } },
    axes: [{ label: mode === 'step' ? 'step' : mode === 'elapsed' ? 'seconds since the first point' : '' }, { label: yLabel, size: 70 }],
    series: [{ label: mode === 'step' ? 'step' : 'time' }].concat(list.map(function (s) {
      // A series of one or two points draws no visible line: show them as dots.
      var few = s.y.filter(function (v) { return v !== null; }).length < 3;
      return { label: s.label, stroke: s.color, width: s.dots ? 0 : 1.5, spanGaps: true, dash: s.dash,
        points: { show: !!s.dots || few, size: 6, fill: s.color } };
    })),
  };
  plots.push(new uPlot(opts, align(list), box));
}
function draw() {
  plots.forEach(function (p) { p.destroy(); });
  plots = [];
  host.textContent = '';
  var a = Number(smooth.value);
  document.getElementById('t-smooth-v').textContent = a.toFixed(2);
  function per(metric, trainKey, evalKey) {
    var list = [];
    runs.forEach(function (run, i) {
      var c = palette[(many ? i : 0) % palette.length], name = many ? run.name + ': ' : '';
      if (trainKey) list.push({ label: name + 'training ' + metric, color: c, x: xs(run, run.train), y: ema(run.train[trainKey], a) });
      if (evalKey) list.push({ label: name + 'evaluation ' + metric, color: many ? c : palette[1], dots: true, dash: many ? [4, 3] : undefined,
        x: xs(run, run.eval), y: run.eval[evalKey] });
    });
    return list;
  }
  chart('Loss', per('loss', 'loss', 'loss'), 'loss');
  chart('Accuracy', per('accuracy', 'accuracy', 'accuracy'), 'accuracy');
  chart('Throughput', runs.map(function (run, i) {
    return { label: (many ? run.name + ': ' : '') + 'samples/s', color: palette[i % palette.length], x: xs(run, run.train), y: ema(run.train.samplesPerSecond, a) };
  }), 'samples/s');
  chart('World size', runs.map(function (run, i) {
    return { label: (many ? run.name + ': ' : '') + 'workers', color: palette[i % palette.length], x: xs(run, run.train), y: run.train.worldSize };
  }), 'workers');
  runs.forEach(function (run) {
    var names = Object.keys(run.workers).sort(function (p, q) { return p.localeCompare(q, 'en', { numeric: true }); });
    if (names.length === 0) return;
    var prefix = many ? run.name + ': ' : '';
    function each(key) {
      return names.map(function (w, j) {
        var cols = run.workers[w];
        return { label: w, color: palette[j % palette.length], x: xs(run, cols), y: ema(cols[key], a) };
      });
    }
    chart(prefix + 'Per worker: samples/s (own share)', each('samplesPerSecond'), 'samples/s');
    chart(prefix + 'Per worker: time in the all-reduce per step (wire + waiting for peers)', each('allReduceMs'), 'ms');
    chart(prefix + 'Per worker: step time', each('stepMs'), 'ms');
  });
}
function download(name, type, text) {
  var a = document.createElement('a');
  a.href = 'data:' + type + ';charset=utf-8,' + encodeURIComponent(text);
  a.download = name;
  document.body.appendChild(a);
  a.click();
  a.remove();
}
function csv() {
  var rows = [['run', 'series', 'worker', 'step', 'time', 'value']];
  function add(run, series, worker, cols, values) {
    values.forEach(function (v, i) {
      if (v === null) return;
      var t = cols.time[i];
      rows.push([run.name, series, worker, cols.step[i], t === null ? '' : new Date(t).toISOString(), v]);
    });
  }
  runs.forEach(function (run) {
    ['loss', 'accuracy', 'samplesPerSecond', 'learningRate', 'worldSize'].forEach(function (k) { add(run, 'train.' + k, '', run.train, run.train[k]); });
    ['loss', 'accuracy'].forEach(function (k) { add(run, 'eval.' + k, '', run.eval, run.eval[k]); });
    Object.keys(run.workers).forEach(function (w) {
      ['samplesPerSecond', 'stepMs', 'allReduceMs'].forEach(function (k) { add(run, 'worker.' + k, w, run.workers[w], run.workers[w][k]); });
    });
  });
  return rows.map(function (r) {
    return r.map(function (c) { c = String(c); return /[",\n]/.test(c) ? '"' + c.replace(/"/g, '""') + '"' : c; }).join(',');
  }).join('\n') + '\n';
}
document.getElementById('t-csv').addEventListener('click', function () { download('tensile-curves.csv', 'text/csv', csv()); });
document.getElementById('t-json').addEventListener('click', function () { download('tensile-curves.json', 'application/json', JSON.stringify(data, null, 1)); });
// The view is in the address (#x=elapsed&smooth=0.6): a link shows what its sender saw.
var hash = new URLSearchParams(location.hash.slice(1));
if (['step', 'elapsed', 'clock'].indexOf(hash.get('x')) >= 0) xSel.value = hash.get('x');
if (hash.get('smooth') !== null) smooth.value = hash.get('smooth');
function remember() {
  history.replaceState(null, '', '#x=' + xSel.value + '&smooth=' + Number(smooth.value).toFixed(2));
  draw();
}
xSel.addEventListener('change', remember);
smooth.addEventListener('input', remember);
window.tensileReport = { csv: csv, data: data, redraw: draw, plots: function () { return plots; } };
draw();
})();`;
