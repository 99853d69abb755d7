/**
 * CSV: one sample per record, a label column and numeric feature columns. Streamed record by record
 * (csv-parse) into a SampleStoreBuilder; a bad row stops the run with the file, line and column.
 */
import { CsvError, type Info, parse } from 'csv-parse';
import type { CsvOptions } from '../../operator/api/training-job.ts';
import { DatasetError } from '../errors.ts';
import { fileError, openByteStream } from './files.ts';
import { type InMemoryStore, SampleStoreBuilder } from './store.ts';

/** Where a reader puts samples: an in-memory store builder, or a shard writer (convert.ts). */
export interface SampleSink<R> {
  readonly size: number;
  readonly featureSize: number;
  add(values: ArrayLike<number>, label: number): void;
  finish(): R;
}

export const inMemory = (featureSize: number): SampleSink<InMemoryStore> =>
  new SampleStoreBuilder(featureSize);

export interface TextDataset<R = InMemoryStore> {
  readonly store: R;
  /** Shape of one sample: `featureShape` of the spec, or [values per sample]. */
  readonly featureShape: number[];
  readonly maxLabel: number;
}

/**
 * The records of a CSV file with the line each ends on, streamed through csv-parse: quoted fields may
 * hold delimiters, quotes ("") and newlines, and a UTF-8 byte order mark is dropped. Column counts are
 * left to the caller, which names the line.
 */
async function* csvRecords(
  file: string,
  delimiter: string,
): AsyncGenerator<{ fields: string[]; line: number }> {
  const parser = parse({
    delimiter,
    bom: true,
    relax_column_count: true,
    relax_quotes: true,
    skip_empty_lines: true,
    info: true,
  });
  const stream = openByteStream(file);
  stream.on('error', (error) => parser.destroy(error));
  try {
    for await (const { record, info } of stream.pipe(parser) as AsyncIterable<{
      record: string[];
      info: Info;
    }>) {
      yield { fields: record, line: info.lines };
    }
  } catch (error) {
    if (error instanceof CsvError) {
      const line = (error as CsvError & { lines?: number }).lines;
      throw new DatasetError(line === undefined ? file : `${file}:${line}`, error.message, { cause: error });
    }
    throw fileError(file, error);
  } finally {
    stream.destroy();
    parser.destroy();
  }
}

function labelIndexOf(
  file: string,
  options: CsvOptions,
  header: string[] | undefined,
  columns: number,
): number {
  const wanted = options.labelColumn.trim();
  if (header !== undefined) {
    const index = header.findIndex((name) => name.trim() === wanted);
    if (index >= 0) return index;
    const shown = header.length > 8 ? `${header.slice(0, 8).join(', ')}, …` : header.join(', ');
    throw new DatasetError(
      file,
      `no column "${wanted}" in the header (${shown}); set dataset.csv.labelColumn to the label's column`,
    );
  }
  if (wanted === 'first') return 0;
  if (wanted === 'last') return columns - 1;
  if (/^\d+$/.test(wanted) && Number(wanted) < columns) return Number(wanted);
  throw new DatasetError(
    file,
    `dataset.csv.header is false, so dataset.csv.labelColumn must be a 0-based column number, "first" or "last" (got "${wanted}")`,
  );
}

export function parseLabel(raw: unknown, classes: number | undefined): number | string {
  const value = typeof raw === 'string' ? Number(raw.trim()) : raw;
  if (typeof value !== 'number' || (typeof raw === 'string' && raw.trim() === ''))
    return `the label ${JSON.stringify(raw)} is not a number`;
  if (!Number.isInteger(value) || value < 0)
    return `the label ${JSON.stringify(raw)} is not a class number (0, 1, …)`;
  if (classes !== undefined && value >= classes)
    return `the label ${value} is not below dataset.classes (${classes})`;
  return value;
}

export function readCsv(
  file: string,
  options: CsvOptions,
  featureShape: readonly number[] | undefined,
  classes: number | undefined,
): Promise<TextDataset> {
  return readCsvInto(file, options, featureShape, classes, inMemory);
}

export async function readCsvInto<R>(
  file: string,
  options: CsvOptions,
  featureShape: readonly number[] | undefined,
  classes: number | undefined,
  sinkFor: (featureSize: number) => SampleSink<R>,
): Promise<TextDataset<R>> {
  let header: string[] | undefined;
  let columns = -1;
  let labelIndex = -1;
  let builder: SampleSink<R> | undefined;
  let values = new Float64Array(0);
  let maxLabel = -1;
  for await (const { fields, line } of csvRecords(file, options.delimiter)) {
    // A line of only blanks is no record (skip_empty_lines drops only truly empty ones).
    if (fields.length === 1 && (fields[0] as string).trim() === '') continue;
    const where = `${file}:${line}`;
    if (options.header && header === undefined) {
      header = fields;
      columns = fields.length;
      labelIndex = labelIndexOf(file, options, header, columns);
      continue;
    }
    if (columns < 0) {
      columns = fields.length;
      labelIndex = labelIndexOf(file, options, undefined, columns);
    }
    if (fields.length !== columns) {
      throw new DatasetError(where, `expected ${columns} columns, got ${fields.length}`);
    }
    if (builder === undefined) {
      const size = columns - 1;
      if (size < 1) throw new DatasetError(where, 'a row needs a label and at least one feature column');
      if (featureShape !== undefined && featureShape.reduce((a, b) => a * b, 1) !== size) {
        throw new DatasetError(
          file,
          `dataset.featureShape [${featureShape.join(', ')}] holds ${featureShape.reduce((a, b) => a * b, 1)} values, but rows have ${size} feature columns`,
        );
      }
      builder = sinkFor(size);
      values = new Float64Array(size);
    }
    let k = 0;
    let label = -1;
    for (let c = 0; c < fields.length; c++) {
      const field = fields[c] as string;
      if (c === labelIndex) {
        const parsed = parseLabel(field, classes);
        if (typeof parsed === 'string') throw new DatasetError(where, parsed);
        label = parsed;
        continue;
      }
      const trimmed = field.trim();
      const value = Number(trimmed);
      if (trimmed === '' || !Number.isFinite(value)) {
        const column = header?.[c]?.trim() ?? String(c);
        throw new DatasetError(where, `column ${column}: ${JSON.stringify(field)} is not a number`);
      }
      values[k++] = value;
    }
    if (label > maxLabel) maxLabel = label;
    builder.add(values, label);
  }
  if (builder === undefined || builder.size === 0) throw new DatasetError(file, 'no data rows');
  return {
    store: builder.finish(),
    featureShape: featureShape ? [...featureShape] : [builder.featureSize],
    maxLabel,
  };
}
