// `node --import ./test/helpers/without-native-tensorflow.mjs …`: the process behaves as if
// @tensorflow/tfjs-node and @tensorflow/tfjs-node-gpu were not installed (npm dropped them), for
// tests of the paths without the native backend on a machine where hack/install-tensorflow.sh ran.
import { register } from 'node:module';

const hook = `
const HIDDEN = /^@tensorflow\\/tfjs-node(-gpu)?(\\/|$)/;
export async function resolve(specifier, context, next) {
  if (HIDDEN.test(specifier)) {
    const error = new Error(\`Cannot find package '\${specifier}' (hidden by without-native-tensorflow.mjs)\`);
    error.code = 'ERR_MODULE_NOT_FOUND';
    throw error;
  }
  return next(specifier, context);
}`;
register(`data:text/javascript,${encodeURIComponent(hook)}`);
