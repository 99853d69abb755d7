/**
 * CSV: one sample per line, a label column and numeric feature columns. Streamed line by line into a
 * SampleStoreBuilder; a bad row stops the run with the file, line and column.
 */
import type { CsvOptions } from '../../operator/api/training-job.ts';
import { DatasetError } from '../errors.ts';
import { textLines } from './files.ts';
import { type InMemoryStore, SampleStoreBuilder } from './store.ts';

export interface TextDataset {
  readonly store: InMemoryStore;
  /** Shape of one sample: `featureShape` of the spec, or [values per sample]. */
  readonly featureShape: number[];
  readonly maxLabel: number;
}

function splitRow(line: string, delimiter: string): string[] {
  if (!line.includes('"')) return line.split(delimiter);
  // Quoted fields ("1,5" or "a ""b"""): rare in numeric data, but a header may carry them.
  const fields: string[] = [];
  let field = '';
  let quoted = false;
  for (let i = 0; i < line.length; i++) {
    const c = line[i];
    if (quoted) {
      if (c === '"' && line[i + 1] === '"') {
        field += '"';
        i++;
      } else if (c === '"') quoted = false;
      else field += c;
    } else if (c === '"') quoted = true;
    else if (c === delimiter) {
      fields.push(field);
      field = '';
    } else field += c;
  }
  fields.push(field);
  return fields;
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

export async function readCsv(
  file: string,
  options: CsvOptions,
  featureShape: readonly number[] | undefined,
  classes: number | undefined,
): Promise<TextDataset> {
  let header: string[] | undefined;
  let columns = -1;
  let labelIndex = -1;
  let builder: SampleStoreBuilder | undefined;
  let values = new Float64Array(0);
  let maxLabel = -1;
  for await (const { line, number } of textLines(file)) {
    if (line.trim() === '') continue;
    const fields = splitRow(line, options.delimiter);
    const where = `${file}:${number}`;
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
      builder = new SampleStoreBuilder(size);
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
