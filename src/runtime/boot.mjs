// Worker bootstrap: registers tsx in the worker thread, then loads the TypeScript worker. Works under
// vitest, `tsx`, and `node bin/hyperbagel.js` alike (execArgv `--import tsx` does not reach workers
// on Node 20).
import { workerData } from 'node:worker_threads';
import { register } from 'tsx/esm/api';
register();
await import(workerData.entry);
