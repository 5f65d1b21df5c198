// package.json's version: `hyperbagel --version` and the gateway's hyperbagel_build_info.
import { readFileSync } from 'node:fs';

let cached: string | undefined;

export function packageVersion(): string {
  if (cached) return cached;
  const pkg = JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8')) as { version?: unknown };
  return (cached = typeof pkg.version === 'string' ? pkg.version : 'unknown');
}
