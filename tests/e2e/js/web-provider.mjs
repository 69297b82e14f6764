// The web SDK and OFREP web provider under Node (see web-flow.mjs). Driven over stdin/stdout
// by tests/e2e/test_e2e_openfeature.py:
//
//   node web-provider.mjs '<spec>'
//   stdout: {"step": "initial", ...}  then  {"step": "polled", ...}   (a 304 poll seen)
//   stdin:  one line, after the test changed an experiment
//   stdout: {"step": "changed", ...}  (the next poll brought the change)
import { createInterface } from 'node:readline';

import { startFlow } from './web-flow.mjs';

const emit = (step, flow, extra = {}) =>
  process.stdout.write(
    `${JSON.stringify({ step, results: flow.evaluate(), requests: flow.requests, events: flow.events, ...extra })}\n`,
  );

const lines = createInterface({ input: process.stdin })[Symbol.asyncIterator]();
const flow = await startFlow(JSON.parse(process.argv[2]));
emit('initial', flow, { ready: flow.ready });
await flow.waitForNotModified();
emit('polled', flow);
await lines.next();
await flow.waitForChange();
emit('changed', flow);
await flow.close();
process.exit(0);
