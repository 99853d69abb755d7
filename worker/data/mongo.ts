/**
 * MongoDB-protocol sources (the official `mongodb` driver; MongoDB, FerretDB, DocumentDB, …): one
 * document per sample, with a features field (numbers, nested arrays allowed, as in jsonl) and a label
 * field. `dataset.path` is the connection string with the database (mongodb://host:27017/db),
 * credentials from the string or the driver's environment. Read with one cursor in `_id` order, a
 * batch at a time, into a sink (memory, or record shards for `dataset.cache`).
 *
 * A database has no content hash short of reading it, so the cache key of a conversion is the
 * collection's identity and shape: its document count and first and last `_id`. Appending or removing
 * documents converts anew; documents edited in place keep the old shards (delete the cache folder).
 */
import { type Collection, MongoClient } from 'mongodb';
import type { MongodbOptions } from '../../operator/api/training-job.ts';
import { DatasetError } from '../errors.ts';
import { parseLabel, type SampleSink, type TextDataset } from './csv.ts';
import { flatten } from './jsonl.ts';

/** The connection string without its credentials, for messages and cache keys. */
export function redact(uri: string): string {
  return uri.replace(/\/\/[^@/]*@/, '//');
}

async function withCollection<T>(
  uri: string,
  options: MongodbOptions,
  use: (collection: Collection) => Promise<T>,
): Promise<T> {
  const client = new MongoClient(uri, { serverSelectionTimeoutMS: 15_000 });
  try {
    await client.connect();
    return await use(client.db().collection(options.collection));
  } catch (error) {
    if (error instanceof DatasetError) throw error;
    throw new DatasetError(
      `${redact(uri)} ${options.collection}`,
      `cannot read: ${(error as Error).message}; check dataset.path (mongodb://host:port/database) and dataset.mongodb.collection`,
    );
  } finally {
    await client.close();
  }
}

/** What the cache key of a conversion is made of (see the header). */
export function mongoFingerprint(uri: string, options: MongodbOptions): Promise<unknown> {
  return withCollection(uri, options, async (collection) => {
    const count = await collection.countDocuments();
    const first = await collection.find({}, { projection: { _id: 1 }, sort: { _id: 1 }, limit: 1 }).toArray();
    const last = await collection.find({}, { projection: { _id: 1 }, sort: { _id: -1 }, limit: 1 }).toArray();
    return {
      uri: redact(uri),
      collection: options.collection,
      count,
      first: String(first[0]?._id),
      last: String(last[0]?._id),
    };
  });
}

export function readMongoInto<R>(
  uri: string,
  options: MongodbOptions,
  featureShape: readonly number[] | undefined,
  classes: number | undefined,
  sinkFor: (featureSize: number) => SampleSink<R>,
): Promise<TextDataset<R>> {
  return withCollection(uri, options, async (collection) => {
    const { featuresField, labelField } = options;
    const cursor = collection.find(
      {},
      { projection: { [featuresField]: 1, [labelField]: 1 }, sort: { _id: 1 }, batchSize: 1000 },
    );
    let sink: SampleSink<R> | undefined;
    let shape: number[] | undefined = featureShape ? [...featureShape] : undefined;
    let maxLabel = -1;
    const values: number[] = [];
    for await (const document of cursor) {
      const where = `${redact(uri)} ${options.collection} _id ${String(document._id)}`;
      values.length = 0;
      const found = flatten(document[featuresField], values);
      if (typeof found === 'string')
        throw new DatasetError(where, `field "${featuresField}" ${found}; set dataset.mongodb.featuresField`);
      const label = parseLabel(document[labelField], classes);
      if (typeof label === 'string') throw new DatasetError(where, `${label} (field "${labelField}")`);
      if (sink === undefined) {
        shape ??= found;
        if (shape.reduce((a, b) => a * b, 1) !== values.length)
          throw new DatasetError(
            where,
            `dataset.featureShape [${shape.join(', ')}] does not hold the ${values.length} values of "${featuresField}"`,
          );
        sink = sinkFor(values.length);
      } else if (values.length !== sink.featureSize) {
        throw new DatasetError(
          where,
          `${values.length} feature values, earlier documents ${sink.featureSize}`,
        );
      }
      if (label > maxLabel) maxLabel = label;
      sink.add(values, label);
    }
    if (sink === undefined || shape === undefined)
      throw new DatasetError(`${redact(uri)} ${options.collection}`, 'no documents');
    return { store: sink.finish(), featureShape: shape, maxLabel };
  });
}
