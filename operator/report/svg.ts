/**
 * Small pure SVG chart helpers for `tensile report`: nice axis ticks, linear scales, line, step-line and
 * dot series, vertical markers and a lane timeline. Strings in, strings out, so the report stays one
 * self-contained file with no script and no chart library.
 */

/** Escapes text for XML and HTML, attributes included. */
export function escapeXml(text: string): string {
  return text
    .replace(/&/g, '&amp;')
    .replace(/</g, '&lt;')
    .replace(/>/g, '&gt;')
    .replace(/"/g, '&quot;')
    .replace(/'/g, '&#39;');
}

/** 1, 2, 5 or 10 times a power of ten, the closest to `value` (or the first not below it). */
export function niceNumber(value: number, round: boolean): number {
  if (!(value > 0) || !Number.isFinite(value)) return 1;
  const exponent = Math.floor(Math.log10(value));
  const base = 10 ** exponent;
  const fraction = value / base;
  let nice: number;
  if (round) nice = fraction < 1.5 ? 1 : fraction < 3 ? 2 : fraction < 7 ? 5 : 10;
  else nice = fraction <= 1 ? 1 : fraction <= 2 ? 2 : fraction <= 5 ? 5 : 10;
  return nice * base;
}

export interface NiceScale {
  readonly min: number;
  readonly max: number;
  readonly step: number;
  readonly ticks: readonly number[];
}

export interface NiceOptions {
  /** About how many ticks (at most one or two more). */
  readonly count?: number;
  /** Ticks on whole numbers only (worker counts). */
  readonly integer?: boolean;
  /** Stretch the domain to include zero. */
  readonly zero?: boolean;
  /** Keep [lo, hi] as the domain and put the round ticks inside it (a shared step axis). */
  readonly exact?: boolean;
}

/** A domain widened to round numbers and its ticks; a single value gets room around it. */
export function niceScale(lo: number, hi: number, options: NiceOptions = {}): NiceScale {
  const count = Math.max(2, options.count ?? 5);
  let a = Number.isFinite(lo) ? lo : 0;
  let b = Number.isFinite(hi) ? hi : a;
  if (a > b) [a, b] = [b, a];
  if (options.zero) {
    a = Math.min(a, 0);
    b = Math.max(b, 0);
  }
  if (a === b) {
    // A flat series sits in the middle of the chart rather than on its edge.
    if (a === 0) b = 1;
    else if (a > 0) [a, b] = [0, 2 * a];
    else [a, b] = [2 * a, 0];
  }
  let step = niceNumber(niceNumber(b - a, false) / (count - 1), true);
  if (options.integer) step = Math.max(1, Math.round(step));
  const min = Math.floor(a / step + 1e-9) * step;
  const max = Math.ceil(b / step - 1e-9) * step;
  const decimals = Math.max(0, -Math.floor(Math.log10(step)) + 1);
  const ticks: number[] = [];
  for (let i = 0; min + i * step <= max + step * 1e-9; i++)
    ticks.push(Number((min + i * step).toFixed(decimals)));
  if (options.exact)
    return { min: a, max: b, step, ticks: ticks.filter((t) => t >= a - step * 1e-9 && t <= b + step * 1e-9) };
  return { min: Number(min.toFixed(decimals)), max: Number(max.toFixed(decimals)), step, ticks };
}

/** Maps [d0, d1] onto [r0, r1]; a zero-width domain maps to the middle of the range. */
export function linearScale(
  domain: readonly [number, number],
  range: readonly [number, number],
): (value: number) => number {
  const [d0, d1] = domain;
  const [r0, r1] = range;
  if (d1 === d0) return () => (r0 + r1) / 2;
  return (value) => r0 + ((value - d0) / (d1 - d0)) * (r1 - r0);
}

/** Digits after the point that a round step such as 0.25 or 2.5 needs to be written exactly. */
function decimalsOf(step: number): number {
  for (let d = 0; d < 12; d++) {
    const scaled = step * 10 ** d;
    if (Math.abs(scaled - Math.round(scaled)) < 1e-6 * Math.max(1, scaled)) return d;
  }
  return 12;
}

/** A tick label with as many decimals as the tick step needs: 0.25, 1500, 12.5k, 5e-6. */
export function formatTick(value: number, step: number): string {
  if (value === 0) return '0';
  if (Math.abs(value) >= 10_000 && step >= 1000) return `${(value / 1000).toFixed(decimalsOf(step / 1000))}k`;
  const decimals = decimalsOf(step);
  if (decimals > 5) return Number(value.toPrecision(3)).toExponential();
  return value.toFixed(decimals);
}

/** A short number for labels and tables: 3 significant digits, no exponent for everyday values. */
export function formatNumber(value: number, digits = 3): string {
  if (!Number.isFinite(value)) return String(value);
  if (value === 0) return '0';
  const magnitude = Math.abs(value);
  if (magnitude >= 10 ** digits) return Math.round(value).toLocaleString('en-US');
  if (magnitude < 1e-4) return Number(value.toPrecision(digits)).toExponential();
  return String(Number(value.toPrecision(digits)));
}

const FONT = 11;
/** Rough width of a label in the report's sans-serif font; enough to keep labels apart. */
export const textWidth = (text: string, size = FONT) => text.length * size * 0.6;

const r1 = (v: number) => Math.round(v * 10) / 10;

export interface Point {
  readonly x: number;
  readonly y: number;
  /** Hover text of a dot. */
  readonly title?: string;
}

export interface Series {
  readonly name: string;
  readonly color: string;
  readonly points: readonly Point[];
  /** line: straight segments; step: each value holds until the next (and to the end); dots: markers. */
  readonly style: 'line' | 'step' | 'dots';
  readonly dashed?: boolean;
  /** Also a dot on every point of a line (sparse series such as evaluations). */
  readonly dots?: boolean;
}

export interface VerticalMarker {
  readonly x: number;
  readonly color: string;
  readonly title: string;
}

export interface ChartSpec {
  readonly ariaLabel: string;
  readonly series: readonly Series[];
  readonly width?: number;
  readonly height?: number;
  /** Shared by every chart of a report, so that a step is at the same place in all of them. */
  readonly xDomain?: readonly [number, number];
  readonly xLabel?: string;
  readonly yZero?: boolean;
  readonly yInteger?: boolean;
  /** Values the y axis must reach besides the data, e.g. room above a flat worker count. */
  readonly yInclude?: readonly number[];
  readonly yFormat?: (value: number) => string;
  readonly markers?: readonly VerticalMarker[];
}

/** Plot margins; the left one fits tick labels such as 0.0015 and the timeline's lane names. */
export const MARGIN = { left: 78, right: 18, top: 26, bottom: 36 } as const;

function extent(values: readonly number[]): [number, number] | undefined {
  let lo = Number.POSITIVE_INFINITY;
  let hi = Number.NEGATIVE_INFINITY;
  for (const v of values) {
    if (!Number.isFinite(v)) continue;
    if (v < lo) lo = v;
    if (v > hi) hi = v;
  }
  return lo <= hi ? [lo, hi] : undefined;
}

function svgOpen(width: number, height: number, label: string): string {
  return `<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 ${width} ${height}" width="${width}" height="${height}" role="img" aria-label="${escapeXml(label)}" font-size="${FONT}">`;
}

/** The bottom axis: ticks, labels and an optional name at the right end. */
function xAxis(
  scale: NiceScale,
  x: (v: number) => number,
  y: number,
  label: string | undefined,
  right: number,
): string {
  const parts = [`<line x1="${MARGIN.left}" y1="${y}" x2="${right}" y2="${y}" stroke="#57606a"/>`];
  for (const tick of scale.ticks) {
    const px = r1(x(tick));
    parts.push(`<line x1="${px}" y1="${y}" x2="${px}" y2="${y + 4}" stroke="#57606a"/>`);
    parts.push(
      `<text x="${px}" y="${y + 15}" text-anchor="middle" fill="#57606a">${escapeXml(formatTick(tick, scale.step))}</text>`,
    );
  }
  if (label !== undefined)
    parts.push(
      `<text x="${right}" y="${y + 30}" text-anchor="end" fill="#57606a">${escapeXml(label)}</text>`,
    );
  return parts.join('');
}

/** Thins ticks whose labels would touch, keeping the first and every n-th. */
function thinTicks(scale: NiceScale, x: (v: number) => number): NiceScale {
  const labels = scale.ticks.map((t) => formatTick(t, scale.step));
  const widest = Math.max(...labels.map((l) => textWidth(l)));
  const first = scale.ticks[0];
  const second = scale.ticks[1];
  if (first === undefined || second === undefined) return scale;
  const gap = Math.abs(x(second) - x(first));
  const every = Math.ceil((widest + 8) / Math.max(gap, 1));
  if (every <= 1) return scale;
  return { ...scale, ticks: scale.ticks.filter((_, i) => i % every === 0) };
}

function noData(width: number, height: number, label: string, note: string): string {
  return `${svgOpen(width, height, label)}<rect x="0.5" y="0.5" width="${width - 1}" height="${height - 1}" fill="none" stroke="#d0d7de" stroke-dasharray="4 3"/><text x="${width / 2}" y="${height / 2 + 4}" text-anchor="middle" fill="#57606a">${escapeXml(note)}</text></svg>`;
}

/** The x domain of some series, widened to round numbers. */
export function xScaleFor(series: readonly Series[], domain?: readonly [number, number]): NiceScale {
  if (domain !== undefined) return niceScale(domain[0], domain[1], { count: 8, exact: true });
  const range = extent(series.flatMap((s) => s.points.map((p) => p.x))) ?? [0, 1];
  return niceScale(range[0], range[1], { count: 8 });
}

/** A line chart with axes, grid, legend and optional vertical markers; "no data" when every series is empty. */
export function lineChart(spec: ChartSpec): string {
  const width = spec.width ?? 720;
  const height = spec.height ?? 220;
  const drawn = spec.series.filter((s) => s.points.some((p) => Number.isFinite(p.x) && Number.isFinite(p.y)));
  if (drawn.length === 0) return noData(width, 56, spec.ariaLabel, 'no data');
  const right = width - MARGIN.right;
  const bottom = height - MARGIN.bottom;
  const xs = xScaleFor(drawn, spec.xDomain);
  const yRange = extent([...drawn.flatMap((s) => s.points.map((p) => p.y)), ...(spec.yInclude ?? [])]) ?? [
    0, 1,
  ];
  const ys = niceScale(yRange[0], yRange[1], {
    count: 5,
    zero: spec.yZero === true,
    integer: spec.yInteger === true,
  });
  const x = linearScale([xs.min, xs.max], [MARGIN.left, right]);
  const y = linearScale([ys.min, ys.max], [bottom, MARGIN.top]);
  const yLabel = spec.yFormat ?? ((v: number) => formatTick(v, ys.step));
  const parts = [svgOpen(width, height, spec.ariaLabel)];

  for (const tick of ys.ticks) {
    const py = r1(y(tick));
    parts.push(`<line x1="${MARGIN.left}" y1="${py}" x2="${right}" y2="${py}" stroke="#eaeef2"/>`);
    parts.push(
      `<text x="${MARGIN.left - 6}" y="${py + 4}" text-anchor="end" fill="#57606a">${escapeXml(yLabel(tick))}</text>`,
    );
  }
  parts.push(xAxis(thinTicks(xs, x), x, bottom, spec.xLabel, right));

  for (const marker of spec.markers ?? []) {
    if (!Number.isFinite(marker.x) || marker.x < xs.min || marker.x > xs.max) continue;
    const px = r1(x(marker.x));
    parts.push(
      `<line x1="${px}" y1="${MARGIN.top}" x2="${px}" y2="${bottom}" stroke="${escapeXml(marker.color)}" stroke-width="1.2" stroke-dasharray="3 3" opacity="0.8"><title>${escapeXml(marker.title)}</title></line>`,
    );
  }

  const valid = (s: Series) => s.points.filter((p) => Number.isFinite(p.x) && Number.isFinite(p.y));
  // A step series holds its last value to the end of the data (or of the shared domain).
  const xEnd = spec.xDomain?.[1] ?? Math.max(...drawn.flatMap((s) => valid(s).map((p) => p.x)));
  for (const s of drawn) {
    if (s.style === 'dots') continue;
    const points = valid(s);
    const coords: string[] = [];
    points.forEach((p, i) => {
      const px = r1(x(p.x));
      if (s.style === 'step' && i > 0) coords.push(`${px},${r1(y((points[i - 1] as Point).y))}`);
      coords.push(`${px},${r1(y(p.y))}`);
    });
    const last = points[points.length - 1];
    if (s.style === 'step' && last !== undefined && last.x < xEnd)
      coords.push(`${r1(x(xEnd))},${r1(y(last.y))}`);
    const dash = s.dashed ? ' stroke-dasharray="5 3"' : '';
    parts.push(
      `<polyline points="${coords.join(' ')}" fill="none" stroke="${escapeXml(s.color)}" stroke-width="1.6" stroke-linejoin="round"${dash}/>`,
    );
  }
  // Dots last, so that lines do not cover them.
  for (const s of drawn) {
    if (s.style !== 'dots' && s.dots !== true) continue;
    for (const p of valid(s)) {
      const title = p.title === undefined ? '' : `<title>${escapeXml(p.title)}</title>`;
      parts.push(
        `<circle cx="${r1(x(p.x))}" cy="${r1(y(p.y))}" r="3" fill="${escapeXml(s.color)}" stroke="#fff" stroke-width="1">${title}</circle>`,
      );
    }
  }

  // Legend on the top margin, left to right from the plot's left edge.
  let lx = MARGIN.left;
  for (const s of drawn) {
    const color = escapeXml(s.color);
    const dot = `<circle cx="${lx + 7}" cy="12" r="3" fill="${color}"/>`;
    const line = `<line x1="${lx}" y1="12" x2="${lx + 14}" y2="12" stroke="${color}" stroke-width="2"${s.dashed ? ' stroke-dasharray="4 2"' : ''}/>`;
    const swatch = s.style === 'dots' ? dot : s.dots ? line + dot : line;
    parts.push(`${swatch}<text x="${lx + 18}" y="16" fill="#24292f">${escapeXml(s.name)}</text>`);
    lx += 18 + textWidth(s.name) + 16;
  }
  parts.push('</svg>');
  return parts.join('');
}

export type MarkShape = 'circle' | 'up' | 'down' | 'diamond' | 'tick' | 'square';

export interface TimelineMark {
  readonly x: number;
  readonly lane: number;
  readonly shape: MarkShape;
  readonly color: string;
  readonly title: string;
  /** Printed above the mark when there is room for it. */
  readonly label?: string;
}

export interface TimelineSpec {
  readonly ariaLabel: string;
  readonly lanes: readonly string[];
  readonly marks: readonly TimelineMark[];
  readonly width?: number;
  readonly xDomain?: readonly [number, number];
  readonly xLabel?: string;
}

function shape(mark: TimelineMark, cx: number, cy: number): string {
  const c = escapeXml(mark.color);
  const title = `<title>${escapeXml(mark.title)}</title>`;
  switch (mark.shape) {
    case 'circle':
      return `<circle cx="${cx}" cy="${cy}" r="4.5" fill="${c}" stroke="#fff">${title}</circle>`;
    case 'square':
      return `<rect x="${r1(cx - 4)}" y="${r1(cy - 4)}" width="8" height="8" fill="${c}" stroke="#fff">${title}</rect>`;
    case 'diamond':
      return `<path d="M${cx} ${r1(cy - 5.5)}L${r1(cx + 5.5)} ${cy}L${cx} ${r1(cy + 5.5)}L${r1(cx - 5.5)} ${cy}Z" fill="${c}" stroke="#fff">${title}</path>`;
    case 'up':
      return `<path d="M${cx} ${r1(cy - 5.5)}L${r1(cx + 5.5)} ${r1(cy + 4.5)}L${r1(cx - 5.5)} ${r1(cy + 4.5)}Z" fill="${c}" stroke="#fff">${title}</path>`;
    case 'down':
      return `<path d="M${cx} ${r1(cy + 5.5)}L${r1(cx + 5.5)} ${r1(cy - 4.5)}L${r1(cx - 5.5)} ${r1(cy - 4.5)}Z" fill="${c}" stroke="#fff">${title}</path>`;
    case 'tick':
      return `<line x1="${cx}" y1="${r1(cy - 6)}" x2="${cx}" y2="${r1(cy + 6)}" stroke="${c}" stroke-width="2">${title}</line>`;
  }
}

const LANE = 34;

/** Events in named lanes over the x axis of the charts; labels that would collide are left out. */
export function timelineChart(spec: TimelineSpec): string {
  const width = spec.width ?? 720;
  const marks = spec.marks.filter((m) => Number.isFinite(m.x) && m.lane >= 0 && m.lane < spec.lanes.length);
  if (marks.length === 0) return noData(width, 56, spec.ariaLabel, 'no events');
  const right = width - MARGIN.right;
  const top = 12;
  const bottom = top + spec.lanes.length * LANE;
  const height = bottom + MARGIN.bottom;
  const xs = xScaleFor(
    [{ name: '', color: '', style: 'dots', points: marks.map((m) => ({ x: m.x, y: 0 })) }],
    spec.xDomain,
  );
  const x = linearScale([xs.min, xs.max], [MARGIN.left, right]);
  const parts = [svgOpen(width, height, spec.ariaLabel)];
  spec.lanes.forEach((name, i) => {
    const cy = top + i * LANE + LANE / 2 + 4;
    if (i % 2 === 0)
      parts.push(
        `<rect x="${MARGIN.left}" y="${top + i * LANE}" width="${right - MARGIN.left}" height="${LANE}" fill="#f6f8fa"/>`,
      );
    parts.push(
      `<text x="${MARGIN.left - 6}" y="${cy + 4}" text-anchor="end" fill="#24292f">${escapeXml(name)}</text>`,
    );
  });
  parts.push(xAxis(thinTicks(xs, x), x, bottom, spec.xLabel, right));
  const labelEnd = spec.lanes.map(() => Number.NEGATIVE_INFINITY);
  const ordered = [...marks].sort((a, b) => a.x - b.x);
  for (const mark of ordered) {
    const cx = r1(x(mark.x));
    const cy = top + mark.lane * LANE + LANE / 2 + 4;
    parts.push(shape(mark, cx, cy));
    if (mark.label === undefined) continue;
    const w = textWidth(mark.label, 10);
    // Labels start at their mark (the next mark is usually to the right), shifted left at the end.
    const start = Math.max(Math.min(cx - 4, right - w), MARGIN.left);
    if (start < (labelEnd[mark.lane] ?? Number.NEGATIVE_INFINITY) + 6) continue;
    labelEnd[mark.lane] = start + w;
    parts.push(
      `<text x="${r1(start)}" y="${cy - 8}" font-size="10" fill="#24292f">${escapeXml(mark.label)}</text>`,
    );
  }
  parts.push('</svg>');
  return parts.join('');
}
