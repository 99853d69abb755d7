/**
 * `npm run gen`: writes crds/tensile.dev_trainingjobs.yaml and the README's TrainingJob reference from
 * the zod schema in operator/api/training-job.ts. test/unit/crd.test.ts fails when either is stale.
 */
import { readFileSync, writeFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { trainingJobCrdYaml } from '../operator/api/crd.ts';
import { withReference } from '../operator/api/reference.ts';

const crdFile = fileURLToPath(new URL('../crds/tensile.dev_trainingjobs.yaml', import.meta.url));
/** Helm installs CRDs from the chart's own crds/ folder: the same file, kept in step by this script. */
const chartCrdFile = fileURLToPath(
  new URL('../charts/tensile/crds/tensile.dev_trainingjobs.yaml', import.meta.url),
);
const readmeFile = fileURLToPath(new URL('../README.md', import.meta.url));

writeFileSync(crdFile, trainingJobCrdYaml());
writeFileSync(chartCrdFile, trainingJobCrdYaml());
writeFileSync(readmeFile, withReference(readFileSync(readmeFile, 'utf8')));
console.log(`wrote ${crdFile}, ${chartCrdFile} and the reference in ${readmeFile}`);
