// @ts-check
// Assembles a result delivered incrementally (@stream / @defer) from its payloads. Understands both
// wire formats in circulation:
//  - graphql-tools / Yoga 5: `{data, hasNext}`, then `{incremental: [{items, path} | {data, path}], hasNext}`,
//    where a stream's `path` ends with the index of its first item;
//  - graphql-js 17: `{data, pending: [{id, path}], hasNext}`, then
//    `{incremental: [{id, items} | {id, data, subPath}], completed: [{id}], hasNext}`.

export class IncrementalResult {
  constructor() {
    /** @type {any} */
    this.data = undefined;
    /** @type {{ message: string, path?: (string|number)[], extensions?: Record<string, unknown> }[]} */
    this.errors = [];
    /** @type {Map<string, (string|number)[]>} */
    this.pending = new Map();
    this.hasNext = true;
  }

  /**
   * Folds one payload in. Returns the paths (joined with ".") that changed, so a caller can react
   * to, say, a new item of `generateImage.previews` without diffing.
   * @param {any} payload
   * @returns {string[]}
   */
  apply(payload) {
    /** @type {string[]} */
    const changed = [];
    if (!payload || typeof payload !== 'object') return changed;
    if (payload.data !== undefined && payload.data !== null) {
      this.data = payload.data;
      changed.push('');
    }
    if (Array.isArray(payload.errors)) this.errors.push(...payload.errors);
    for (const p of Array.isArray(payload.pending) ? payload.pending : []) {
      if (p && p.id !== undefined && Array.isArray(p.path)) this.pending.set(String(p.id), p.path);
    }
    for (const inc of Array.isArray(payload.incremental) ? payload.incremental : []) {
      if (!inc || typeof inc !== 'object') continue;
      if (Array.isArray(inc.errors)) this.errors.push(...inc.errors);
      /** @type {(string|number)[] | undefined} */
      let path = Array.isArray(inc.path) ? inc.path : undefined;
      if (!path && inc.id !== undefined) {
        const base = this.pending.get(String(inc.id));
        if (base) path = [...base, ...(Array.isArray(inc.subPath) ? inc.subPath : [])];
      }
      if (!path) continue;
      if (Array.isArray(inc.items)) {
        const listPath = typeof path[path.length - 1] === 'number' ? path.slice(0, -1) : path;
        const list = this.#at(listPath, true);
        if (Array.isArray(list)) {
          if (typeof path[path.length - 1] === 'number') {
            let i = /** @type {number} */ (path[path.length - 1]);
            for (const item of inc.items) list[i++] = item;
          } else {
            list.push(...inc.items);
          }
          changed.push(listPath.join('.'));
        }
      } else if (inc.data && typeof inc.data === 'object') {
        const target = this.#at(path, false);
        if (target && typeof target === 'object') {
          deepMerge(target, inc.data);
          changed.push(...Object.keys(inc.data).map((k) => [...path, k].join('.')));
        }
      }
    }
    for (const c of Array.isArray(payload.completed) ? payload.completed : []) {
      if (c && c.id !== undefined) this.pending.delete(String(c.id));
      if (c && Array.isArray(c.errors)) this.errors.push(...c.errors);
    }
    if (typeof payload.hasNext === 'boolean') this.hasNext = payload.hasNext;
    else if (payload.incremental === undefined && payload.pending === undefined) this.hasNext = false;
    return changed;
  }

  /**
   * @param {(string|number)[]} path
   * @param {boolean} wantList  create a missing list at the end of the path
   */
  #at(path, wantList) {
    if (this.data === undefined || this.data === null) this.data = {};
    /** @type {any} */
    let node = this.data;
    for (let i = 0; i < path.length; i++) {
      const key = path[i];
      if (node === null || typeof node !== 'object' || UNSAFE_KEYS.has(String(key))) return undefined;
      if (!Object.hasOwn(node, key) || node[key] === undefined || node[key] === null) {
        if (i === path.length - 1 && wantList) node[key] = [];
        else return undefined;
      }
      node = node[key];
    }
    return node;
  }
}

/** Keys a response must not reach through: they lead to (and would change) every object's prototype. */
const UNSAFE_KEYS = new Set(['__proto__', 'constructor', 'prototype']);

/**
 * @param {any} target
 * @param {any} source
 */
function deepMerge(target, source) {
  for (const [k, v] of Object.entries(source)) {
    if (UNSAFE_KEYS.has(k)) continue;
    if (v && typeof v === 'object' && !Array.isArray(v) && Object.hasOwn(target, k) && target[k] && typeof target[k] === 'object' && !Array.isArray(target[k])) {
      deepMerge(target[k], v);
    } else {
      target[k] = v;
    }
  }
}
