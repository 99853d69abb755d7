/**
 * JSON Lines: one object per line with a features field (numbers, nested arrays allowed: their
 * nesting is the sample's shape) and a label field. Streamed into a SampleStoreBuilder.
 */
import type { JsonlOptions } from '../../operator/api/training-job.ts';
import { DatasetError } from '../errors.ts';
import { inMemory, parseLabel, type SampleSink, type TextDataset } from './csv.ts';
import { textLines } from './files.ts';

/** Flattens nested number arrays; returns the shape, or a problem. */
export function flatten(value: unknown, out: number[]): number[] | string {
  if (!Array.isArray(value)) return 'is not an array of numbers';
  if (value.length === 0) return 'is an empty array';
  if (value.every((v) => typeof v === 'number')) {
    for (const v of value as number[]) {
      if (!Number.isFinite(v)) return `holds ${v}, not a finite number`;
      out.push(v);
    }
    return [value.length];
  }
  let inner: number[] | undefined;
  for (const item of value) {
    const shape = flatten(item, out);
    if (typeof shape === 'string') return shape;
    if (inner !== undefined && shape.join(',') !== inner.join(','))
      return 'is a ragged array (rows of different lengths)';
    inner = shape;
  }
  return [value.length, ...(inner ?? [])];
}

export function readJsonl(
  file: string,
  options: JsonlOptions,
  featureShape: readonly number[] | undefined,
  classes: number | undefined,
): Promise<TextDataset> {
  return readJsonlInto(file, options, featureShape, classes, inMemory);
}

export async function readJsonlInto<R>(
  file: string,
  options: JsonlOptions,
  featureShape: readonly number[] | undefined,
  classes: number | undefined,
  sinkFor: (featureSize: number) => SampleSink<R>,
): Promise<TextDataset<R>> {
  let builder: SampleSink<R> | undefined;
  let shape: number[] | undefined = featureShape ? [...featureShape] : undefined;
  let maxLabel = -1;
  let firstShape: string | undefined;
  const values: number[] = [];
  for await (const { line, number } of textLines(file)) {
    if (line.trim() === '') continue;
    const where = `${file}:${number}`;
    let record: unknown;
    try {
      record = JSON.parse(line);
    } catch (error) {
      throw new DatasetError(where, `not JSON (${(error as Error).message})`);
    }
    if (typeof record !== 'object' || record === null || Array.isArray(record))
      throw new DatasetError(where, 'expected a JSON object per line');
    const fields = record as Record<string, unknown>;
    if (!(options.featuresField in fields))
      throw new DatasetError(where, `no field "${options.featuresField}"; set dataset.jsonl.featuresField`);
    if (!(options.labelField in fields))
      throw new DatasetError(where, `no field "${options.labelField}"; set dataset.jsonl.labelField`);
    values.length = 0;
    const found = flatten(fields[options.featuresField], values);
    if (typeof found === 'string') throw new DatasetError(where, `field "${options.featuresField}" ${found}`);
    const label = parseLabel(fields[options.labelField], classes);
    if (typeof label === 'string') throw new DatasetError(where, label);
    const nesting = found.join(', ');
    if (firstShape !== undefined && nesting !== firstShape) {
      throw new DatasetError(
        where,
        `field "${options.featuresField}" has shape [${nesting}], earlier lines [${firstShape}]`,
      );
    }
    firstShape ??= nesting;
    if (builder === undefined) {
      const size = values.length;
      if (shape === undefined) shape = found;
      else if (shape.reduce((a, b) => a * b, 1) !== size) {
        throw new DatasetError(
          where,
          `dataset.featureShape [${shape.join(', ')}] holds ${shape.reduce((a, b) => a * b, 1)} values, but "${options.featuresField}" has ${size}`,
        );
      }
      builder = sinkFor(size);
    }
    if (label > maxLabel) maxLabel = label;
    builder.add(values, label);
  }
  if (builder === undefined || shape === undefined) throw new DatasetError(file, 'no data lines');
  return { store: builder.finish(), featureShape: shape, maxLabel };
}
