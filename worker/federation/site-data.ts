/**
 * A site's part of the job's dataset, for sites that bring no data of their own: every worker of
 * every site cuts the same partition (federation.partition, deterministic) and keeps its site's part.
 */
import type { FederationSpec } from '../../operator/api/training-job.ts';
import type { Dataset } from '../data/dataset.ts';
import { SubsetStore } from '../data/store.ts';
import { partitionByLabel } from './partition.ts';

export function siteDataset(dataset: Dataset, federation: FederationSpec, index: number): Dataset {
  const site = federation.sites[index];
  if (site === undefined || site.dataset !== undefined) return dataset;
  const labels = new Int32Array(dataset.train.size);
  for (let i = 0; i < labels.length; i++) labels[i] = dataset.train.labelAt(i);
  const parts = partitionByLabel(labels, { sites: federation.sites.length, ...federation.partition });
  const part = parts[index] ?? new Uint32Array(0);
  if (part.length === 0)
    throw new RangeError(
      `site ${site.name} got no samples from the partition (α=${federation.partition.alpha}); raise federation.partition.alpha or use fewer sites`,
    );
  const train = new SubsetStore(dataset.train, part);
  return {
    ...dataset,
    train,
    fingerprint: { ...dataset.fingerprint, trainSamples: train.size },
    describe: { ...dataset.describe, trainSamples: train.size },
  };
}
