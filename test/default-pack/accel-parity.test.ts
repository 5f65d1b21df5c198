// PyTorch vs onnxruntime-node parity of the default pack's graphs on the trained weights: reference
// tensors written into models/shapes-mot/parity/ by models/recipes/export_pack.py --parity (base graphs)
// and models/recipes/accel/export_accel.py --parity (draft, denoise_6nfe, denoise_1nfe).
import * as fs from 'node:fs';
import * as path from 'node:path';
import { describe, expect, it } from 'vitest';
import { DEFAULT_PACK } from '../../src/engine/pack-location.ts';
import { expectParity, readJson, runParityCase, type Manifest, type ParityCase } from '../recipes/helpers.ts';

const PARITY = path.join(DEFAULT_PACK, 'parity');

describe.runIf(fs.existsSync(PARITY))('default pack graphs: PyTorch vs onnxruntime-node, max |diff| <= 1e-4', () => {
  const manifest = readJson<Manifest>(path.join(DEFAULT_PACK, 'manifest.json'));
  const files = fs.readdirSync(PARITY).filter((f) => f.endsWith('.json')).sort();
  it('has a reference for every acceleration graph the pack ships', () => {
    const graphs = new Set(files.map((f) => readJson<ParityCase>(path.join(PARITY, f)).graph));
    for (const g of ['draft', 'denoise_6nfe', 'denoise_1nfe']) if (manifest.graphs[g]) expect(graphs.has(g), g).toBe(true);
  });
  for (const f of files) {
    it(f, async () => {
      const { c, out } = await runParityCase(DEFAULT_PACK, manifest, f);
      expectParity(c, out, f);
    });
  }
});
