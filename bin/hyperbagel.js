#!/bin/sh
":" //; exec node --max-semi-space-size=64 "$0" "$@"
// Entry point for `npx hyperbagel`: loads the TypeScript CLI through tsx so no build step is needed.
// The two lines above are both shell and JavaScript: sh runs Node on this file with the flag (`env -S`
// would do it in one line, but BusyBox's env, e.g. on Alpine, has no -S); to Node they are a string and
// a comment. --max-semi-space-size=64 (MB; V8's default is 16): the gateway's thread collects its young
// generation less often (`bench gateway --tokens 250`: 4 scavenges in a 5 s round instead of 14-15,
// 33-44 ms of pauses instead of 64-90), so fewer events wait behind a pause (docs/gateway.md, "The V8
// young generation"). `npm start` passes the same flag.
import { register } from 'tsx/esm/api';
register();
const { main } = await import('../src/cli/main.ts');
process.exitCode = await main(process.argv.slice(2));
