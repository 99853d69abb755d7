/** Where the tests and benchmarks find the real Fashion-MNIST files (Debian's dataset-fashion-mnist). */
import { existsSync } from 'node:fs';
import { join } from 'node:path';

const DIR = '/usr/share/datasets/fashion-mnist';

/** The dataset's directory; throws with the install command when the files are not there. */
export function fashionMnistDir(): string {
  if (!existsSync(join(DIR, 'train-images-idx3-ubyte.gz')))
    throw new Error(
      `Fashion-MNIST is missing at ${DIR}; install it with: bash hack/install-tools.sh (apt-get install dataset-fashion-mnist)`,
    );
  return DIR;
}
