// A full garbage collection on demand, for benchmarks that must not carry one round's garbage into
// the next, or that read the heap after a collection.
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';

let gc: (() => void) | undefined;

/** Two full collections of this thread's heap (V8's gc() exposed at run time, without a command-line flag). */
export function forceGc(): void {
  if (!gc) {
    setFlagsFromString('--expose-gc');
    gc = runInNewContext('gc') as () => void;
  }
  gc();
  gc();
}
