/**
 * Validation of TrainingJob documents against the zod schema, with messages that name the field and
 * the fix. Used by `tensile validate`, the operator (InvalidSpec) and the worker (its configuration).
 */
import { LineCounter, parseAllDocuments } from 'yaml';
import type { z } from 'zod';
import { API_GROUP, API_GROUP_VERSION, KIND, type TrainingJob, TrainingJobSchema } from './training-job.ts';

export interface FieldProblem {
  /** Dotted path such as `spec.worker.tolerations[0].value`; empty for the whole document. */
  readonly path: string;
  readonly message: string;
}

export type TrainingJobValidation =
  | { readonly ok: true; readonly job: TrainingJob }
  | { readonly ok: false; readonly problems: readonly FieldProblem[] };

type PathSegment = PropertyKey;

export function formatPath(path: readonly PathSegment[]): string {
  let out = '';
  for (const segment of path) {
    if (typeof segment === 'number') out += `[${segment}]`;
    else {
      const key = String(segment);
      if (/^[A-Za-z_][A-Za-z0-9_]*$/.test(key)) out += out === '' ? key : `.${key}`;
      else out += `[${JSON.stringify(key)}]`;
    }
  }
  return out;
}

function show(value: unknown): string {
  if (value === undefined) return 'nothing';
  if (value === null) return 'null';
  if (typeof value === 'string')
    return JSON.stringify(value.length > 60 ? `${value.slice(0, 57)}...` : value);
  if (Array.isArray(value)) return `a list of ${value.length}`;
  if (typeof value === 'object') return 'an object';
  return String(value);
}

function typeName(expected: string): string {
  switch (expected) {
    case 'int':
    case 'number':
      return expected === 'int' ? 'an integer' : 'a number';
    case 'object':
      return 'an object';
    case 'array':
      return 'a list';
    case 'string':
      return 'a string';
    case 'boolean':
      return 'true or false';
    default:
      return expected;
  }
}

function levenshtein(a: string, b: string): number {
  const row = Array.from({ length: b.length + 1 }, (_, i) => i);
  for (let i = 1; i <= a.length; i++) {
    let previous = row[0] ?? 0;
    row[0] = i;
    for (let j = 1; j <= b.length; j++) {
      const current = row[j] ?? 0;
      const cost = a[i - 1]?.toLowerCase() === b[j - 1]?.toLowerCase() ? 0 : 1;
      row[j] = Math.min((row[j] ?? 0) + 1, (row[j - 1] ?? 0) + 1, previous + cost);
      previous = current;
    }
  }
  return row[b.length] ?? 0;
}

export function closestName(name: string, candidates: readonly string[]): string | undefined {
  let best: string | undefined;
  let bestDistance = Number.POSITIVE_INFINITY;
  for (const candidate of candidates) {
    const distance = levenshtein(name, candidate);
    if (distance < bestDistance) {
      best = candidate;
      bestDistance = distance;
    }
  }
  return bestDistance <= Math.max(2, Math.floor(name.length / 3)) ? best : undefined;
}

interface ZodDefLike {
  type?: string;
  shape?: Record<string, unknown>;
  innerType?: unknown;
  element?: unknown;
  valueType?: unknown;
  in?: unknown;
  format?: unknown;
}

function defOf(schema: unknown): ZodDefLike | undefined {
  const zod = (schema as { _zod?: { def?: ZodDefLike } } | undefined)?._zod;
  return zod?.def;
}

/** The schema node at `path`, looking through optional/default/pipe wrappers. */
function schemaAt(schema: z.ZodType, path: readonly PathSegment[]): ZodDefLike | undefined {
  let node: unknown = schema;
  const unwrap = () => {
    for (let def = defOf(node); def !== undefined; def = defOf(node)) {
      if (def.innerType !== undefined) node = def.innerType;
      else if (def.type === 'pipe' && def.in !== undefined) node = def.in;
      else break;
    }
  };
  for (const segment of path) {
    unwrap();
    const def = defOf(node);
    if (def === undefined) return undefined;
    if (def.type === 'object' && def.shape !== undefined) node = def.shape[String(segment)];
    else if (def.type === 'array') node = def.element;
    else if (def.type === 'record') node = def.valueType;
    else return undefined;
  }
  unwrap();
  return defOf(node);
}

/** The field names an object in the schema accepts at `path`, for "did you mean" hints. */
export function knownFieldsAt(schema: z.ZodType, path: readonly PathSegment[]): string[] {
  const def = schemaAt(schema, path);
  return def?.type === 'object' && def.shape !== undefined ? Object.keys(def.shape) : [];
}

function expectedAt(schema: z.ZodType, path: readonly PathSegment[], expected: string): string {
  const def = schemaAt(schema, path);
  if (def?.type === 'number' && typeof def.format === 'string' && /int/.test(def.format)) return 'int';
  return expected;
}

function describeIssue(issue: z.core.$ZodIssue, schema: z.ZodType): FieldProblem[] {
  const path = formatPath(issue.path);
  const input = (issue as { input?: unknown }).input;
  const at = (message: string, extraPath = path): FieldProblem => ({ path: extraPath, message });
  switch (issue.code) {
    case 'invalid_type': {
      const expected = typeName(expectedAt(schema, issue.path, issue.expected));
      if (input === undefined) return [at(`required; set it to ${expected}`)];
      return [at(`expected ${expected}, got ${show(input)}`)];
    }
    case 'too_small': {
      const min = String(issue.minimum);
      if (issue.origin === 'array' || issue.origin === 'set')
        return [at(`needs at least ${min} item${min === '1' ? '' : 's'}, got ${show(input)}`)];
      if (issue.origin === 'string') return [at(`needs at least ${min} character${min === '1' ? '' : 's'}`)];
      return [at(`must be ${issue.inclusive ? '≥' : '>'} ${min}, got ${show(input)}`)];
    }
    case 'too_big': {
      const max = String(issue.maximum);
      if (issue.origin === 'array' || issue.origin === 'set')
        return [at(`allows at most ${max} items, got ${show(input)}`)];
      if (issue.origin === 'string') return [at(`allows at most ${max} characters`)];
      return [at(`must be ${issue.inclusive ? '≤' : '<'} ${max}, got ${show(input)}`)];
    }
    case 'invalid_value':
      return [at(`expected ${issue.values.map((v) => JSON.stringify(v)).join(', ')}; got ${show(input)}`)];
    case 'unrecognized_keys':
      return issue.keys.map((key) => {
        const hint = closestName(key, knownFieldsAt(schema, issue.path));
        const fieldPath = formatPath([...issue.path, key]);
        return at(`unknown field${hint === undefined ? '' : `; did you mean ${hint}?`}`, fieldPath);
      });
    case 'invalid_union': {
      // The branch that got furthest names the real problem (e.g. a quantity string that does not parse).
      const branches = issue.errors.filter((branch) => branch.every((i) => i.code !== 'invalid_type'));
      const chosen = branches[0];
      if (chosen !== undefined) {
        return chosen.flatMap((inner) =>
          describeIssue(
            { ...inner, path: [...issue.path, ...inner.path], input } as z.core.$ZodIssue,
            schema,
          ),
        );
      }
      return [at(`${issue.message}, got ${show(input)}`)];
    }
    case 'invalid_format':
      if (issue.message.startsWith('Invalid')) return [at(`expected ${issue.format}, got ${show(input)}`)];
      return [at(`${issue.message}; got ${show(input)}`)];
    default:
      return [at(issue.message)];
  }
}

export function zodProblems(error: z.ZodError, schema: z.ZodType): FieldProblem[] {
  return error.issues.flatMap((issue) => describeIssue(issue, schema));
}

/** Validates one parsed document as a TrainingJob, applying the schema's defaults. */
export function validateTrainingJob(document: unknown): TrainingJobValidation {
  const result = TrainingJobSchema.safeParse(document, { reportInput: true });
  if (result.success) return { ok: true, job: result.data };
  return { ok: false, problems: zodProblems(result.error, TrainingJobSchema) };
}

export interface ManifestProblem {
  readonly file: string;
  /** 1-based document number in a multi-document file; 0 for problems with the file itself. */
  readonly document: number;
  readonly line?: number;
  readonly path: string;
  readonly message: string;
  /** Notes (a document of another kind) are printed but do not fail validation. */
  readonly severity: 'error' | 'note';
}

export interface ManifestReport {
  readonly problems: readonly ManifestProblem[];
  readonly jobs: readonly TrainingJob[];
}

export function isTrainingJobKind(document: unknown): boolean {
  if (typeof document !== 'object' || document === null) return false;
  const { apiVersion, kind } = document as { apiVersion?: unknown; kind?: unknown };
  return kind === KIND && typeof apiVersion === 'string' && apiVersion.startsWith(`${API_GROUP}/`);
}

/** Parses a (multi-document) YAML text and validates every TrainingJob in it. */
export function validateManifestText(text: string, file: string): ManifestReport {
  const problems: ManifestProblem[] = [];
  const jobs: TrainingJob[] = [];
  if (text.trim() === '') {
    return {
      problems: [
        {
          file,
          document: 0,
          path: '',
          message: 'the file is empty; expected a TrainingJob manifest',
          severity: 'error',
        },
      ],
      jobs,
    };
  }
  const lineCounter = new LineCounter();
  const documents = parseAllDocuments(text, { lineCounter, prettyErrors: true });
  const list = Array.isArray(documents) ? documents : [documents];
  let trainingJobs = 0;
  list.forEach((doc, index) => {
    const number = index + 1;
    const firstError = doc.errors[0];
    if (firstError !== undefined) {
      // Later parse errors in the same document are almost always echoes of the first one.
      for (const error of [firstError]) {
        const line = error.linePos?.[0]?.line;
        problems.push({
          file,
          document: number,
          ...(line === undefined ? {} : { line }),
          path: '',
          message: `not valid YAML: ${(error.message.split('\n')[0] ?? '').replace(/ at line \d+, column \d+:?$/, '')}`,
          severity: 'error',
        });
      }
      return;
    }
    const value: unknown = doc.toJS();
    if (value === null || value === undefined) return;
    if (!isTrainingJobKind(value)) {
      const { apiVersion, kind } = (typeof value === 'object' ? value : {}) as {
        apiVersion?: unknown;
        kind?: unknown;
      };
      const what =
        typeof kind === 'string'
          ? `${String(apiVersion ?? '?')} ${kind}`
          : 'a document without apiVersion/kind';
      problems.push({
        file,
        document: number,
        path: '',
        message: `${what} is not a ${API_GROUP_VERSION} ${KIND}; skipped`,
        severity: 'note',
      });
      return;
    }
    trainingJobs++;
    const result = validateTrainingJob(value);
    if (result.ok) {
      jobs.push(result.job);
      return;
    }
    const located = result.problems.map((problem) => {
      const line = lineOf(doc, problem.path, lineCounter);
      return {
        file,
        document: number,
        ...(line === undefined ? {} : { line }),
        ...problem,
        severity: 'error' as const,
      };
    });
    located.sort((a, b) => (a.line ?? 0) - (b.line ?? 0));
    problems.push(...located);
  });
  if (trainingJobs === 0 && !problems.some((p) => p.severity === 'error')) {
    problems.push({ file, document: 0, path: '', message: `no ${KIND} in this file`, severity: 'error' });
  }
  return { problems, jobs };
}

function splitPath(path: string): (string | number)[] {
  const out: (string | number)[] = [];
  for (const match of path.matchAll(/([A-Za-z_][A-Za-z0-9_]*)|\[(\d+)\]|\["((?:[^"\\]|\\.)*)"\]/g)) {
    if (match[1] !== undefined) out.push(match[1]);
    else if (match[2] !== undefined) out.push(Number(match[2]));
    else if (match[3] !== undefined) out.push(JSON.parse(`"${match[3]}"`) as string);
  }
  return out;
}

interface DocumentLike {
  getIn(path: Iterable<unknown>, keepScalar?: boolean): unknown;
}

/** Line of the deepest existing node on `path`, so an editor can jump to the problem. */
function lineOf(doc: DocumentLike, path: string, counter: LineCounter): number | undefined {
  const segments = splitPath(path);
  for (let n = segments.length; n >= 0; n--) {
    const node = doc.getIn(segments.slice(0, n), true) as { range?: [number, number, number] } | undefined;
    if (node?.range !== undefined) return counter.linePos(node.range[0]).line;
  }
  return undefined;
}

export function formatManifestProblem(problem: ManifestProblem): string {
  const where = problem.line === undefined ? problem.file : `${problem.file}:${problem.line}`;
  const document = problem.document === 0 ? '' : ` document ${problem.document}:`;
  const field = problem.path === '' ? '' : ` ${problem.path}:`;
  const prefix = problem.severity === 'note' ? ' note:' : '';
  return `${where}:${document}${prefix}${field} ${problem.message}`;
}
