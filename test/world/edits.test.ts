// Every edit kind: what applyEdit does, instruction text ↔ edit round trips, invalid edits.
import { describe, expect, it } from 'vitest';
import { applyEdit, EDIT_KINDS, editInstruction, parseCaption, parseInstruction, randomEdit, Rng, sceneFor, sceneToCaption, WorldError, type Edit } from '../../src/world/index.ts';

const scene = parseCaption('a large red circle at the top left and a small blue star at the center on a gray background');
const edited = (instruction: string) => sceneToCaption(applyEdit(scene, parseInstruction(instruction)));

describe('each edit kind', () => {
  it('recolor', () => expect(edited('make the red circle green')).toBe('a large green circle at the top left and a small blue star at the center on a gray background'));
  it('resize', () => expect(edited('make the blue star large')).toBe('a large red circle at the top left and a large blue star at the center on a gray background'));
  it('move', () => expect(edited('move the red circle to the bottom right')).toBe('a small blue star at the center and a large red circle at the bottom right on a gray background'));
  it('remove', () => expect(edited('remove the blue star')).toBe('a large red circle at the top left on a gray background'));
  it('add', () => expect(edited('add a small pink triangle at the right')).toBe('a large red circle at the top left and a small blue star at the center and a small pink triangle at the right on a gray background'));
  it('background', () => expect(edited('change the background to beige')).toBe('a large red circle at the top left and a small blue star at the center on a beige background'));
});

describe('instruction ↔ edit', () => {
  it('parseInstruction inverts editInstruction for random edits of every kind', () => {
    const seen = new Set<string>();
    for (let i = 0; i < 300; i++) {
      const s = sceneFor('train', i);
      const rng = new Rng(`edit-test:${i}`);
      for (const kind of EDIT_KINDS) {
        const e = randomEdit(s, kind, rng);
        if (!e) continue;
        seen.add(kind);
        const text = editInstruction(e);
        expect(parseInstruction(text)).toEqual(e);
        expect(applyEdit(s, parseInstruction(text))).toEqual(applyEdit(s, e));
      }
    }
    expect([...seen].sort()).toEqual([...EDIT_KINDS].sort());
  });

  it('a random edit of each kind changes the scene', () => {
    for (let i = 0; i < 100; i++) {
      const s = sceneFor('test', i);
      for (const kind of EDIT_KINDS) {
        const e = randomEdit(s, kind, new Rng(`chg:${i}:${kind}`));
        if (e) expect(sceneToCaption(applyEdit(s, e))).not.toBe(sceneToCaption(s));
      }
    }
  });
});

describe('invalid edits', () => {
  const code = (f: () => unknown) => { try { f(); } catch (err) { return (err as WorldError).code; } return 'none'; };
  it('missing target, occupied cell, duplicate object, too many objects → INVALID_EDIT', () => {
    const cases: Edit[] = [
      { kind: 'recolor', target: { color: 'green', shape: 'square' }, color: 'red' },
      { kind: 'move', target: { color: 'red', shape: 'circle' }, cell: 'center' },
      { kind: 'add', object: { shape: 'circle', color: 'red', size: 'small', cell: 'bottom' } },
    ];
    expect(code(() => applyEdit(scene, cases[0]!))).toBe('INVALID_EDIT');
    expect(code(() => applyEdit(scene, cases[1]!))).toBe('INVALID_EDIT');
    expect(code(() => applyEdit(scene, cases[2]!))).toBe('INVALID_EDIT');
    const full = parseCaption('a large red circle at the top left and a small blue star at the center and a small green square at the right and a large pink star at the bottom on a white background');
    expect(code(() => applyEdit(full, { kind: 'add', object: { shape: 'circle', color: 'cyan', size: 'small', cell: 'left' } }))).toBe('INVALID_EDIT');
    expect(code(() => applyEdit(parseCaption('a large red circle at the top on a white background'), { kind: 'remove', target: { color: 'red', shape: 'circle' } }))).toBe('INVALID_EDIT');
  });

  it('an edit that changes nothing → INVALID_EDIT naming why', () => {
    const why = (text: string) => { try { applyEdit(scene, parseInstruction(text)); } catch (err) { return `${(err as WorldError).code}: ${(err as Error).message}`; } return 'accepted'; };
    expect(why('make the red circle red')).toBe('INVALID_EDIT: cannot make the red circle red: it is already red, so the edit would change nothing');
    expect(why('make the blue star small')).toBe('INVALID_EDIT: cannot make the blue star small: it is already small, so the edit would change nothing');
    expect(why('move the red circle to the top left')).toBe('INVALID_EDIT: cannot move the red circle to the top left: it is already at the top left, so the edit would change nothing');
    expect(why('change the background to gray')).toBe('INVALID_EDIT: cannot change the background to gray: the background is already gray, so the edit would change nothing');
  });

  it('unparseable instructions → PARSE_ERROR / UNKNOWN_WORDS', () => {
    expect(code(() => parseInstruction('make the red circle'))).toBe('PARSE_ERROR');
    expect(code(() => parseInstruction('move the red circle to the moon'))).toBe('UNKNOWN_WORDS');
    expect(code(() => parseInstruction('remove the red circle now please'))).toBe('UNKNOWN_WORDS');
    expect(code(() => parseInstruction('remove the red circle at'))).toBe('PARSE_ERROR');
  });
});
