/**
 * Parquet (hyparquet, pure JavaScript): a label column and feature columns, chosen by name. Features
 * are numeric columns (one value each, in `featureColumns` order), or a single column whose values
 * are lists of numbers or byte arrays (an image's pixels). Read one row group at a time, so memory
 * holds one row group of the selected columns, whatever the file's size.
 */
import { asyncBufferFromFile, parquetMetadataAsync, parquetRead, parquetSchema } from 'hyparquet';
import { compressors } from 'hyparquet-compressors';
import type { ParquetOptions } from '../../operator/api/training-job.ts';
import { DatasetError } from '../errors.ts';
import { parseLabel, type SampleSink, type TextDataset } from './csv.ts';
import { fileError } from './files.ts';

function columnsOf(file: string, names: string[], options: ParquetOptions): string[] {
  if (!names.includes(options.labelColumn))
    throw new DatasetError(
      file,
      `no column "${options.labelColumn}" (columns: ${names.slice(0, 8).join(', ')}${names.length > 8 ? ', …' : ''}); set dataset.parquet.labelColumn`,
    );
  const features = options.featureColumns ?? names.filter((n) => n !== options.labelColumn);
  const missing = features.filter((n) => !names.includes(n));
  if (missing.length > 0)
    throw new DatasetError(
      file,
      `no column ${missing.map((m) => `"${m}"`).join(', ')}; check dataset.parquet.featureColumns`,
    );
  if (features.length === 0) throw new DatasetError(file, 'no feature columns besides the label');
  return features;
}

/** The values of one row's feature cells, flattened into `out`; a problem as a string. */
function rowValues(cells: readonly unknown[], out: number[]): string | undefined {
  out.length = 0;
  for (const cell of cells) {
    if (typeof cell === 'number') out.push(cell);
    else if (typeof cell === 'bigint') out.push(Number(cell));
    else if (cell instanceof Uint8Array) for (const v of cell) out.push(v);
    else if (Array.isArray(cell) && cell.every((v) => typeof v === 'number'))
      for (const v of cell) out.push(v);
    else
      return `holds ${cell === null ? 'null' : typeof cell}, expected a number, a list of numbers or bytes`;
  }
  if (out.some((v) => !Number.isFinite(v))) return 'holds a value that is not a finite number';
  return undefined;
}

export async function readParquetInto<R>(
  file: string,
  options: ParquetOptions,
  featureShape: readonly number[] | undefined,
  classes: number | undefined,
  sinkFor: (featureSize: number) => SampleSink<R>,
): Promise<TextDataset<R>> {
  let buffer: Awaited<ReturnType<typeof asyncBufferFromFile>>;
  let metadata: Awaited<ReturnType<typeof parquetMetadataAsync>>;
  try {
    buffer = await asyncBufferFromFile(file);
    metadata = await parquetMetadataAsync(buffer);
  } catch (error) {
    if ((error as { code?: string }).code !== undefined) throw fileError(file, error);
    throw new DatasetError(file, `not a Parquet file (${(error as Error).message})`);
  }
  const names = parquetSchema(metadata).children.map((c) => c.element.name);
  const features = columnsOf(file, names, options);
  const columns = [...features, options.labelColumn];
  let sink: SampleSink<R> | undefined;
  let maxLabel = -1;
  const values: number[] = [];
  let rowStart = 0;
  for (const group of metadata.row_groups) {
    const rowEnd = rowStart + Number(group.num_rows);
    let rows: unknown[][] = [];
    await parquetRead({
      file: buffer,
      metadata,
      columns,
      rowStart,
      rowEnd,
      compressors,
      utf8: false,
      onComplete: (r) => {
        rows = r;
      },
    });
    for (const [i, row] of rows.entries()) {
      const where = `${file}: row ${rowStart + i}`;
      const problem = rowValues(row.slice(0, features.length), values);
      if (problem !== undefined) throw new DatasetError(where, `a feature column ${problem}`);
      const raw = row[features.length];
      const label = parseLabel(typeof raw === 'bigint' ? Number(raw) : raw, classes);
      if (typeof label === 'string') throw new DatasetError(where, label);
      if (sink === undefined) {
        const wanted = featureShape?.reduce((a, b) => a * b, 1);
        if (wanted !== undefined && wanted !== values.length)
          throw new DatasetError(
            file,
            `dataset.featureShape [${featureShape?.join(', ')}] holds ${wanted} values, but a row has ${values.length}`,
          );
        sink = sinkFor(values.length);
      } else if (values.length !== sink.featureSize) {
        throw new DatasetError(where, `${values.length} feature values, earlier rows ${sink.featureSize}`);
      }
      if (label > maxLabel) maxLabel = label;
      sink.add(values, label);
    }
    rowStart = rowEnd;
  }
  if (sink === undefined) throw new DatasetError(file, 'no rows');
  return {
    store: sink.finish(),
    featureShape: featureShape ? [...featureShape] : [sink.featureSize],
    maxLabel,
  };
}
