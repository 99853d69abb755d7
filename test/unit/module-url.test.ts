import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { runsFromSources, siblingModule } from '../../worker/module-url.ts';

test('a sibling keeps the extension of the module that names it: .ts from the sources, .js in dist/', () => {
  assert.is(
    siblingModule('./writer-thread', 'file:///src/worker/checkpoint/store.ts').href,
    'file:///src/worker/checkpoint/writer-thread.ts',
  );
  assert.is(
    siblingModule('./writer-thread', 'file:///app/dist/worker/checkpoint/store.js').href,
    'file:///app/dist/worker/checkpoint/writer-thread.js',
  );
  assert.ok(runsFromSources('file:///src/worker/checkpoint/store.ts'));
  assert.not.ok(runsFromSources('file:///app/dist/worker/checkpoint/store.js'));
});

test('a specifier with an extension is refused, naming it', () => {
  assert.throws(
    () => siblingModule('./writer-thread.ts', 'file:///src/store.ts'),
    /"\.\/writer-thread\.ts" must name the module without its extension/,
  );
});

test.run();
