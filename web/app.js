// @ts-check
// The hyperbagel web demo: a streaming chat (subscription `understand`) and progressive image generation
// and editing (mutations `generateImage` / `editImage` start a detached job; its previews and final
// arrive from `subscription imageJob`), tied together by one server-side session. Everything goes over
// graphql-ws at /graphql, except closing the session when the page goes away (an HTTP POST that
// outlives the page).
import { GraphQLWsClient, GraphQLRequestError } from './gql-ws.js';

// ---------------------------------------------------------------- operations

const UNDERSTAND = /* GraphQL */ `
subscription Understand($input: UnderstandInput!) {
  understand(input: $input) {
    text tokenIds acceptedTokens draftedTokens steps done finishReason fullText
    usage { promptTokens completionTokens totalTokens }
    timings { queueMs timeToFirstTokenMs totalMs tokensPerSecond }
    speculation { mode drafts draftedTokens acceptedTokens meanAcceptedLength acceptanceRate }
  }
}`;

const FRAME_FIELDS = 'stage nfe step elapsedMs seed sampler thought image { mimeType width height byteLength base64 sha256 }';

// The mutations start a *detached* job (they select neither `previews` nor `result`), so the job keeps
// running if the socket drops; its frames come from `imageJob(id, after)`, which can be resumed after a
// reconnect from the last event seen.
const GENERATE = /* GraphQL */ `
mutation Generate($input: GenerateImageInput!) {
  generateImage(input: $input) { id status mode seed }
}`;

const EDIT = /* GraphQL */ `
mutation Edit($input: EditImageInput!) {
  editImage(input: $input) { id status mode seed }
}`;

const IMAGE_JOB = /* GraphQL */ `
subscription ImageJob($id: ID!, $after: Int) {
  imageJob(id: $id, after: $after) { seq status done error { code message } frame { ${FRAME_FIELDS} } }
}`;

/** Reconnect attempts for a running image job after the socket drops, and the first delay (doubled each time). */
const RESUME_ATTEMPTS = 5;
const RESUME_BASE_DELAY_MS = 250;
/** How many times in a row an `imageJob` refused RATE_LIMITED is subscribed again (after the server's retryAfterMs). */
const RATE_LIMIT_RETRIES = 8;
/** `models` while the server loads its model (UNAVAILABLE) or cannot be reached: the first retry delay (doubled each time), and the longest. */
const MODEL_RETRY_BASE_MS = 1000;
const MODEL_RETRY_MAX_MS = 30_000;
/** The socket closed while the page was idle: the first delay before reconnecting (doubled each time), and the longest. */
const RECONNECT_BASE_MS = 1000;
const RECONNECT_MAX_MS = 15_000;

const CANCEL_JOB = 'mutation CancelJob($id: ID!) { cancelJob(id: $id) }';
const JOB_STATUS = 'query JobStatus($id: ID!) { job(id: $id) { id status } }';
const CREATE_SESSION = 'mutation CreateSession { createSession }';
const CLOSE_SESSION = 'mutation CloseSession($id: ID!) { closeSession(id: $id) }';
const MODELS = 'query Models { models { name description capabilities { understand generate edit draft sixStep oneStep think } imageSize { width height } words guidance { sixStep { text { default min max } } oneStep { text { default min max } } } } }';

/** What each server error code means for someone at the page. */
const ERROR_HINTS = /** @type {Record<string, string>} */ ({
  BUSY: 'Every job slot is taken and the queue is full; try again in a moment.',
  UNKNOWN_WORDS: 'The model knows only the Shapes-world words: see “Words the model knows”.',
  INVALID_INPUT: 'The request was not valid.',
  OUT_OF_RANGE: 'A number is outside what the server accepts (max tokens, seed, guidance, …).',
  JOB_NOT_FOUND: 'The server no longer knows this job (it restarted, or the job expired); generate again.',
  TOO_MANY_SUBSCRIPTIONS: 'This page has too many operations open on its connection; wait for one to end.',
  UNAVAILABLE: 'The model is still loading (or the server is restarting); try again in a moment.',
  MODEL_LOAD_FAILED: 'The server could not load its model; ask whoever runs it to check its log.',
  NETWORK: 'The server could not be reached; check that it is running, then try again.',
  PARSE_ERROR: 'That is not a caption the Shapes world understands.',
  BAD_IMAGE: 'Try a PNG, JPEG or WebP file.',
  IMAGE_TOO_LARGE: 'Try a smaller image.',
  PROMPT_TOO_LONG: 'The prompt is longer than the server accepts.',
  SESSION_NOT_FOUND: 'The session expired; the next request starts a new one.',
  SESSION_BUSY: 'This session is busy with another request.',
  SESSION_FULL: 'The session’s context is full; start a new session.',
  UNAUTHENTICATED: 'Add #apiKey=… to the page address.',
  CONNECTION_FAILED: 'The server could not be reached (or refused more connections from here); check that it is running, then try again.',
  RATE_LIMITED: 'Too many requests from here; wait a moment, then try again.',
  SLOW_CONSUMER: 'The answer came faster than this page could take it; try again.',
});

/**
 * The server's default limit on an input image's encoded size (`maxImageBytes` in
 * src/gateway/limits.ts; the API does not expose it). Files the browser can decode are scaled to the
 * model's size before they are sent, so this only applies to files sent as they are. A larger one
 * would be refused (IMAGE_TOO_LARGE), or, past the server's message limit, close the socket (1009).
 */
const MAX_IMAGE_BYTES = 20 * 1024 * 1024;

// ---------------------------------------------------------------- DOM helpers

/**
 * @template {HTMLElement} T
 * @param {string} id
 * @param {new (...args: any[]) => T} type
 * @returns {T}
 */
function $(id, type) {
  const node = document.getElementById(id);
  if (!(node instanceof type)) throw new Error(`#${id} missing`);
  return node;
}

const ui = {
  conn: $('conn', HTMLElement),
  model: $('model', HTMLElement),
  sessionId: $('session-id', HTMLElement),
  newSession: $('new-session', HTMLButtonElement),
  error: $('error', HTMLElement),
  errorCode: $('error-code', HTMLElement),
  errorMessage: $('error-message', HTMLElement),
  errorClose: $('error-close', HTMLButtonElement),
  dropzone: $('dropzone', HTMLElement),
  image: $('current-image', HTMLImageElement),
  dropHint: $('drop-hint', HTMLElement),
  imageLabel: $('image-label', HTMLElement),
  fileInput: $('file-input', HTMLInputElement),
  randomScene: $('random-scene', HTMLButtonElement),
  clearImage: $('clear-image', HTMLButtonElement),
  renderForm: $('render-form', HTMLFormElement),
  caption: $('caption-input', HTMLInputElement),
  genForm: $('gen-form', HTMLFormElement),
  genPrompt: $('gen-prompt', HTMLTextAreaElement),
  genGenerate: $('gen-generate', HTMLButtonElement),
  genEdit: $('gen-edit', HTMLButtonElement),
  genStop: $('gen-stop', HTMLButtonElement),
  genHint: $('gen-hint', HTMLElement),
  genVocab: $('gen-vocab', HTMLDetailsElement),
  genMode: $('gen-mode', HTMLSelectElement),
  genIntermediate: $('gen-intermediate', HTMLInputElement),
  genThink: $('gen-think', HTMLInputElement),
  genThinkLabel: $('gen-think-label', HTMLElement),
  genThought: $('gen-thought', HTMLElement),
  genSeed: $('gen-seed', HTMLInputElement),
  genGuidance: $('gen-guidance', HTMLInputElement),
  genStatus: $('gen-status', HTMLElement),
  frames: $('frames', HTMLOListElement),
  messages: $('messages', HTMLOListElement),
  chatForm: $('chat-form', HTMLFormElement),
  chatInput: $('chat-input', HTMLInputElement),
  chatSend: $('chat-send', HTMLButtonElement),
  chatStop: $('chat-stop', HTMLButtonElement),
  chatHint: $('chat-hint', HTMLElement),
  chatVocab: $('chat-vocab', HTMLDetailsElement),
  chatMax: $('chat-max', HTMLInputElement),
  chatTemp: $('chat-temp', HTMLInputElement),
  chatAttach: $('chat-attach', HTMLInputElement),
  stSteps: $('st-steps', HTMLElement),
  stTokens: $('st-tokens', HTMLElement),
  stMal: $('st-mal', HTMLElement),
  stRate: $('st-rate', HTMLElement),
  stTps: $('st-tps', HTMLElement),
  stTtft: $('st-ttft', HTMLElement),
  chart: $('steps-chart', HTMLElement),
  compare: $('spec-compare', HTMLTableElement),
};

/**
 * @param {string} tag
 * @param {string} [className]
 * @param {string} [text]
 */
function h(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

// ---------------------------------------------------------------- state

// The API key: `#apiKey=KEY` (a fragment never reaches a server or its logs), or `?apiKey=KEY`. Either way it
// is taken out of the page address at once, so it stays out of the history and of bookmarks.
const params = new URLSearchParams(location.search);
const fragment = new URLSearchParams(location.hash.slice(1));
const apiKey = fragment.get('apiKey') ?? params.get('apiKey') ?? undefined;
if (fragment.has('apiKey') || params.has('apiKey')) {
  params.delete('apiKey');
  fragment.delete('apiKey');
  const query = params.toString();
  const hash = fragment.toString();
  history.replaceState(history.state, '', `${location.pathname}${query ? `?${query}` : ''}${hash ? `#${hash}` : ''}`);
}

const client = new GraphQLWsClient(`${location.protocol === 'https:' ? 'wss' : 'ws'}://${location.host}/graphql`, {
  connectionParams: () => (apiKey ? { apiKey, authorization: `Bearer ${apiKey}` } : undefined),
  onStatus: (status, detail) => {
    ui.conn.dataset.state = status;
    ui.conn.textContent = status === 'closed' ? `disconnected${detail ? `: ${detail}` : ''}` : status;
    if (status === 'connected') {
      wasConnected = true;
      reconnectTries = 0;
      clearTimeout(reconnectTimer);
    } else if (status === 'closed' && wasConnected && !leaving) {
      scheduleReconnect();
    }
  },
});

// The connection pill. The client connects lazily (on the next operation), so a page left idle after the
// server went away would say "disconnected" after the server is back: once a connection has been
// acknowledged, a closed socket is reopened in the background (1 s, doubling to 15 s), which also tells
// the page the server is back. (Not before a first acknowledgement: a refused API key stays refused.)
let wasConnected = false;
let leaving = false;
let reconnectTries = 0;
/** @type {ReturnType<typeof setTimeout> | undefined} */
let reconnectTimer;
function scheduleReconnect() {
  clearTimeout(reconnectTimer);
  const delay = Math.min(RECONNECT_MAX_MS, RECONNECT_BASE_MS * 2 ** reconnectTries++);
  reconnectTimer = setTimeout(() => {
    if (!leaving) client.connect().catch(() => undefined); // a failure closes the socket again: the next try is scheduled then
  }, delay);
}

/**
 * The image the page is working on.
 * - `chatHasIt`: the session's conversation already holds it (it was sent with a question), so the
 *   next question does not send it again. Images the server generated are sent with the next question:
 *   the conversation is text + the images the client attached.
 * - `sessionLatest`: it is the session's latest image (sent with a question, or produced by a job
 *   in this session), so an edit may leave `image` out and let the server use it.
 * @typedef {{ dataUrl: string, label: string, chatHasIt: boolean, sessionLatest: boolean }} CurrentImage
 * @type {CurrentImage | null}
 */
let current = null;
/** @type {string | null} */
let sessionId = null;
/** @type {Promise<string | null> | null} */
let sessionPromise = null;
/** @type {(() => void) | null} */
let stopChat = null;
/** @type {(() => void) | null} */
let stopGeneration = null;
/** The session the running answer / image job of this page uses (a session runs one request at a time). */
let chatSid = /** @type {string | null} */ (null);
let jobSid = /** @type {string | null} */ (null);
/**
 * The current session holds an image on the server (one sent with a question, or a job's final, shown or
 * not): the model sees it in the next question even when nothing is on screen.
 */
let sessionHasImage = false;

// ---------------------------------------------------------------- errors

/**
 * Shows an error in the banner. `code` is the server's `extensions.code` (or a local one).
 * @param {string} code
 * @param {string} message
 * @param {boolean} [withHint]  add the code's hint (ERROR_HINTS) to the message
 */
function showError(code, message, withHint = true) {
  ui.errorCode.textContent = code;
  const hint = withHint ? ERROR_HINTS[code] : undefined;
  ui.errorMessage.textContent = hint && !message.includes(hint) ? `${message} — ${hint}` : message;
  ui.error.dataset.code = code;
  ui.error.hidden = false;
}

/**
 * Shows a server error; a session the server no longer knows is dropped so the next call makes one.
 * UNKNOWN_WORDS opens the list of the words the model knows next to the box the words came from.
 * @param {{ code: string, message: string }} e
 * @param {HTMLDetailsElement} [vocabulary]  the list to open on UNKNOWN_WORDS
 */
function serverError(e, vocabulary) {
  showError(e.code, e.message);
  if (e.code === 'UNKNOWN_WORDS' && vocabulary && !vocabulary.hidden) vocabulary.open = true;
  if (e.code === 'SESSION_NOT_FOUND') {
    sessionId = null;
    ui.sessionId.textContent = 'expired';
    forgetSessionImage();
    refreshButtons();
  }
}

function clearError() {
  ui.error.hidden = true;
  delete ui.error.dataset.code;
}

/**
 * @param {unknown} err
 * @returns {{ code: string, message: string }}
 */
function describeError(err) {
  if (err instanceof GraphQLRequestError) return { code: err.code, message: err.message };
  if (err instanceof Error) return { code: 'ERROR', message: err.message };
  return { code: 'ERROR', message: String(err) };
}

/**
 * The error to show for a failed operation: the first error's code, every message, and the words an
 * UNKNOWN_WORDS names (`extensions.words`) when its message does not.
 * @param {{ message: string, extensions?: Record<string, unknown> }[]} errors
 * @returns {{ code: string, message: string, extensions: Record<string, unknown> }}
 */
function firstError(errors) {
  const withCode = errors.find((e) => typeof e.extensions?.code === 'string') ?? errors[0];
  const extensions = withCode?.extensions ?? {};
  const code = typeof extensions.code === 'string' ? extensions.code : 'ERROR';
  let message = errors.map((e) => e.message).join('; ') || 'request failed';
  const words = extensions.words;
  if (code === 'UNKNOWN_WORDS' && Array.isArray(words) && words.length && !words.every((w) => message.includes(String(w)))) {
    message += ` (${extensions.untrained ? 'never trained on' : 'unknown'}: ${words.join(', ')})`;
  }
  return { code, message, extensions };
}

/**
 * How long a RATE_LIMITED refusal asks to wait (`extensions.retryAfterMs`, else `retryAfterSeconds`), within 100 ms to 30 s.
 * @param {Record<string, unknown>} extensions
 */
function retryAfterMs(extensions) {
  const ms = Number(extensions.retryAfterMs ?? Number(extensions.retryAfterSeconds) * 1000);
  return Math.min(30_000, Math.max(100, Number.isFinite(ms) ? Math.ceil(ms) : 1000));
}

// ---------------------------------------------------------------- session and model

/** @returns {Promise<string | null>} */
function ensureSession() {
  // the model's details did not load (the server was loading its model, or unreachable): try again now
  if (capabilities === null && !modelLoading) void loadModel();
  if (sessionId) return Promise.resolve(sessionId);
  if (sessionPromise) return sessionPromise;
  ui.sessionId.textContent = '…';
  sessionPromise = client.request({ query: CREATE_SESSION }).then(
    (r) => {
      sessionId = String(r.data?.createSession ?? '') || null;
      ui.sessionId.textContent = sessionId ?? 'none';
      sessionHasImage = false;
      forgetSessionImage();
      return sessionId;
    },
    (err) => {
      const e = describeError(err);
      showError(e.code, `could not create a session: ${e.message}`);
      ui.sessionId.textContent = 'none';
      return null;
    },
  ).finally(() => {
    sessionPromise = null;
    refreshButtons();
  });
  return sessionPromise;
}

function forgetSessionImage() {
  if (current) current.chatHasIt = current.sessionLatest = false;
}

/** New session: the old one is closed (now, or when this page's request that uses it ends). */
function resetSession() {
  // an answer still streaming belongs to the old conversation: stop it (its message is about to go, and
  // Ask stays disabled while it runs)
  stopChat?.();
  const old = sessionId;
  sessionId = null;
  forgetSessionImage();
  ui.messages.replaceChildren();
  if (old) retireSession(old);
  refreshButtons(); // a job of this page in the old session no longer holds Ask back
  return ensureSession();
}

/**
 * The session expired on the server (SESSION_NOT_FOUND) while a request of this page was starting:
 * drop it so `ensureSession` makes a new one.
 * @param {string | null} sid  the session the failed request used
 */
function dropExpiredSession(sid) {
  if (sid && sid !== sessionId) return; // the page has moved on already
  sessionId = null;
  ui.sessionId.textContent = 'expired';
  forgetSessionImage();
  refreshButtons();
}

// Closing sessions. The server keeps a bounded number of sessions (least recently used idle ones are
// evicted), so a page that never closed its sessions would, with every reload or New session, push
// other visitors' conversations out. The server refuses to close a session while a request uses it
// (SESSION_BUSY, see closeSession in schema.graphql): such a session is closed once this page's
// request on it has ended.

/** How many requests of this page (chat answers, image jobs) use each session. */
const sessionUsers = /** @type {Map<string, number>} */ (new Map());
/** Sessions this page has left and still has to close, with the number of refused tries. */
const retiring = /** @type {Map<string, number>} */ (new Map());
/** Sessions with a closeSession in flight. */
const closing = /** @type {Set<string>} */ (new Set());

/**
 * Marks `id` as used by one request of this page until the returned function is called.
 * @param {string | null} id
 * @returns {() => void}
 */
function useSession(id) {
  if (!id) return () => {};
  sessionUsers.set(id, (sessionUsers.get(id) ?? 0) + 1);
  let released = false;
  return () => {
    if (released) return;
    released = true;
    const n = (sessionUsers.get(id) ?? 1) - 1;
    if (n > 0) sessionUsers.set(id, n);
    else sessionUsers.delete(id);
    closeRetired(id);
  };
}

/** @param {string} id */
function retireSession(id) {
  if (!retiring.has(id)) retiring.set(id, 0);
  closeRetired(id);
}

/** @param {string} id */
function closeRetired(id) {
  if (!retiring.has(id) || sessionUsers.has(id) || closing.has(id)) return;
  closing.add(id);
  client.request({ query: CLOSE_SESSION, variables: { id } })
    .then(
      () => { retiring.delete(id); },
      (err) => {
        const tries = (retiring.get(id) ?? 0) + 1;
        if (describeError(err).code === 'SESSION_BUSY' && tries < 6) {
          // A request this page stopped a moment ago: the server lets go of the session shortly after.
          retiring.set(id, tries);
          setTimeout(() => closeRetired(id), 200 * 2 ** tries);
        } else {
          // Gone already, or the server is unreachable: it expires on its own.
          retiring.delete(id);
        }
      },
    )
    .finally(() => { closing.delete(id); });
}

/** The image job this page is running, if any (cancelled when the page goes away). */
let runningJobId = /** @type {string | null} */ (null);

/**
 * An HTTP POST to /graphql that outlives the page (`keepalive`; unlike sendBeacon it can carry the
 * API key). JSON, so the server's CSRF rule (text/plain and form bodies need a preflight header) does
 * not apply.
 * @param {string} query
 * @param {Record<string, unknown>} variables
 */
function postOnExit(query, variables) {
  /** @type {Record<string, string>} */
  const headers = { 'content-type': 'application/json' };
  if (apiKey) headers.authorization = `Bearer ${apiKey}`;
  try {
    fetch('/graphql', { method: 'POST', keepalive: true, headers, body: JSON.stringify({ query, variables }) }).catch(() => undefined);
  } catch {
    // nothing to do while the page goes away
  }
}

/**
 * The page goes away (reload, navigation, closed tab): cancel the running job (nobody will see its
 * frames) and close the page's sessions. A session that a request still holds at that moment is
 * refused by the server and expires on its own.
 */
function closeOnExit() {
  leaving = true; // no reconnecting in the background
  clearTimeout(reconnectTimer);
  clearTimeout(modelTimer);
  const ids = new Set(retiring.keys());
  if (sessionId) ids.add(sessionId);
  if (runningJobId) postOnExit(CANCEL_JOB, { id: runningJobId });
  client.close(); // ends a streaming answer, so its session is free as soon as possible
  for (const id of ids) postOnExit(CLOSE_SESSION, { id });
  retiring.clear();
  sessionId = null;
}

/** @type {{ draft: boolean } | null} */
let capabilities = null;
/** @type {{ width: number, height: number } | null} */
let imageSize = null;
/** @typedef {{ default: number, min: number, max: number }} ScaleRange */
/** @type {{ sixStep: { text: ScaleRange }, oneStep: { text: ScaleRange } } | null} */
let guidance = null;

/** The guidance box takes the range the selected mode's samplers accept (progressive: both), and shows their default. */
function showGuidanceRange() {
  if (!guidance) return;
  const mode = ui.genMode.value;
  const ranges = mode === 'ONE_STEP' ? [guidance.oneStep.text] : mode === 'SIX_STEP' ? [guidance.sixStep.text] : [guidance.oneStep.text, guidance.sixStep.text];
  const min = Math.max(...ranges.map((r) => r.min));
  const max = Math.min(...ranges.map((r) => r.max));
  ui.genGuidance.min = String(min);
  ui.genGuidance.max = String(max);
  ui.genGuidance.placeholder = `default ${ranges.map((r) => r.default).join(' / ')}`;
  ui.genGuidance.title = `text guidance scale, ${min} to ${max}; empty: each sampler's default`;
}

/** The `models` request in flight, if any. */
let modelLoading = /** @type {Promise<void> | null} */ (null);
let modelTries = 0;
/** @type {ReturnType<typeof setTimeout> | undefined} */
let modelTimer;

/**
 * Loads the model's details (name, capabilities, image size, guidance ranges, words). While the server is
 * loading its model (UNAVAILABLE) or cannot be reached, it tries again (1 s, doubling to 30 s; at once
 * when a request needs a session); once loaded after such a failure, it starts the session that could not
 * be created meanwhile.
 * @returns {Promise<void>}
 */
function loadModel() {
  clearTimeout(modelTimer);
  if (modelLoading) return modelLoading;
  modelLoading = (async () => {
    try {
      const r = await client.request({ query: MODELS });
      const m = r.data?.models?.[0];
      if (!m) { ui.model.textContent = 'model: none'; return; }
      capabilities = m.capabilities;
      imageSize = m.imageSize;
      ui.model.textContent = `model: ${m.name} · ${m.imageSize.width}×${m.imageSize.height}${m.capabilities.draft ? ' · draft' : ' · no draft model'}`;
      ui.model.title = m.description;
      ui.genThinkLabel.hidden = !m.capabilities.think;
      guidance = m.guidance ?? null;
      showGuidanceRange();
      showVocabulary(Array.isArray(m.words) ? m.words.map(String) : []);
      if (modelTries > 0) {
        // the model was still loading when the page opened: its session could not be created then
        if (ui.error.dataset.code === 'UNAVAILABLE' || ui.error.dataset.code === 'CONNECTION_FAILED') clearError();
        if (!sessionId) void ensureSession();
      }
      modelTries = 0;
    } catch (err) {
      const e = describeError(err);
      if (e.code === 'UNAVAILABLE' || e.code === 'CONNECTION_FAILED' || e.code === 'CONNECTION_CLOSED' || e.code === 'RATE_LIMITED') {
        const delay = Math.min(MODEL_RETRY_MAX_MS, MODEL_RETRY_BASE_MS * 2 ** modelTries++);
        ui.model.textContent = `model: ${e.code === 'UNAVAILABLE' ? 'loading' : 'unavailable'} (${e.code}) · retrying in ${Math.round(delay / 1000)} s`;
        modelTimer = setTimeout(() => { if (!leaving) void loadModel(); }, delay);
      } else {
        ui.model.textContent = `model: unavailable (${e.code})`;
      }
    }
  })().finally(() => { modelLoading = null; });
  return modelLoading;
}

/**
 * Fills the two "Words the model knows" lists (under the prompt and under the question): prompts,
 * questions and instructions may use only these (others are refused with UNKNOWN_WORDS).
 * @param {string[]} words
 */
function showVocabulary(words) {
  for (const details of [ui.genVocab, ui.chatVocab]) {
    details.hidden = words.length === 0;
    const summary = details.querySelector('summary');
    const list = details.querySelector('.words');
    if (summary) summary.textContent = `Words the model knows (${words.length})`;
    if (list) list.textContent = words.join(' ');
  }
}

// ---------------------------------------------------------------- the current image

const DROP_HINT = ui.dropHint.textContent ?? '';

/**
 * @param {string} dataUrl
 * @param {string} label
 * @param {boolean} sessionLatest  the server produced it for the current session
 */
function setImage(dataUrl, label, sessionLatest) {
  current = { dataUrl, label, chatHasIt: false, sessionLatest };
  ui.image.src = dataUrl;
  ui.image.hidden = false;
  ui.image.alt = label;
  ui.dropHint.hidden = true;
  ui.imageLabel.textContent = label;
  refreshButtons();
}

/**
 * The server could not use an image this page sent: drop it, so the next request does not send it again.
 * @param {CurrentImage | null} sent  the image the failed request carried
 * @param {string} code
 */
function refuseImage(sent, code) {
  if (!sent || current !== sent || (code !== 'BAD_IMAGE' && code !== 'IMAGE_TOO_LARGE')) return;
  const label = sent.label;
  clearImage();
  ui.imageLabel.textContent = `refused by the server (${code}): ${label}`;
}

function clearImage() {
  current = null;
  ui.image.removeAttribute('src');
  ui.image.hidden = true;
  ui.dropHint.hidden = false;
  ui.dropHint.textContent = DROP_HINT;
  ui.imageLabel.textContent = 'no image';
  refreshButtons(); // nothing to edit
}

/** @param {Blob} blob @returns {Promise<string>} */
function blobToDataUrl(blob) {
  return new Promise((resolveUrl, rejectUrl) => {
    const reader = new FileReader();
    reader.onload = () => resolveUrl(String(reader.result));
    reader.onerror = () => rejectUrl(reader.error ?? new Error('could not read the file'));
    reader.readAsDataURL(blob);
  });
}

/** @param {File} file */
async function attachFile(file) {
  clearError();
  if (!file.type.startsWith('image/')) {
    showError('INVALID_INPUT', `"${file.name}" is not an image (${file.type || 'unknown type'})`);
    return;
  }
  const fitted = await fitToModel(file);
  if (fitted) {
    setImage(fitted.dataUrl, `uploaded: ${file.name} (${fitted.from} → ${fitted.to})`, false);
  } else if (file.size > MAX_IMAGE_BYTES) {
    // Sent as is it would be refused, or close the socket (1009) on every try: do not attach it.
    const mib = (/** @type {number} */ n) => Number((n / 1024 / 1024).toFixed(1));
    showError('IMAGE_TOO_LARGE', `"${file.name}" was not attached: it is ${mib(file.size)} MiB, this browser cannot decode it to scale it down, and the server accepts at most ${mib(MAX_IMAGE_BYTES)} MiB`);
  } else {
    // The browser cannot decode it either: send it as is and let the server say what is wrong.
    setImage(await blobToDataUrl(file), `uploaded: ${file.name} (${Math.ceil(file.size / 1024)} KiB)`, false);
  }
}

/**
 * The model reads images of one size (models.imageSize, 64×64 for the Shapes packs). A reference client
 * adapts what the user gives it: centre-crop to a square, then scale to that size, as PNG. Returns null
 * when the browser cannot decode the image; images already at the model's size come back unchanged.
 * @param {Blob} file
 * @returns {Promise<{ dataUrl: string, from: string, to: string } | null>}
 */
async function fitToModel(file) {
  // An object URL, not a data URL: a large photo is decoded without first becoming a huge string.
  const url = URL.createObjectURL(file);
  try {
    const img = new Image();
    img.src = url;
    try {
      await img.decode();
    } catch {
      return null;
    }
    const w = img.naturalWidth, h = img.naturalHeight;
    const size = imageSize ?? { width: 64, height: 64 };
    const from = `${w}×${h}`, to = `${size.width}×${size.height}`;
    if (w === size.width && h === size.height) return { dataUrl: await blobToDataUrl(file), from, to };
    const canvas = document.createElement('canvas');
    canvas.width = size.width;
    canvas.height = size.height;
    const g = canvas.getContext('2d');
    if (!g) return null;
    const side = Math.min(w, h);
    g.imageSmoothingQuality = 'high';
    g.drawImage(img, (w - side) / 2, (h - side) / 2, side, side, 0, 0, size.width, size.height);
    return { dataUrl: canvas.toDataURL('image/png'), from, to };
  } finally {
    URL.revokeObjectURL(url);
  }
}

/** @param {URLSearchParams} query */
async function renderScene(query) {
  clearError();
  let res;
  try {
    res = await fetch(`/demo/api/render?${query}`);
  } catch (err) {
    showError('NETWORK', `could not render the scene: ${describeError(err).message}`);
    return;
  }
  if (!res.ok) {
    // the renderer's own refusals are { error: { code, message } }; the gateway's (429 RATE_LIMITED, 403)
    // are GraphQL-shaped, { errors: [{ message, extensions: { code } }] }
    /** @type {any} */
    const body = await res.json().catch(() => null);
    const first = Array.isArray(body?.errors) ? body.errors[0] : body?.error;
    const code = first?.extensions?.code ?? first?.code;
    showError(typeof code === 'string' ? code : `HTTP_${res.status}`, typeof first?.message === 'string' ? first.message : res.statusText || `HTTP ${res.status}`);
    return;
  }
  const caption = res.headers.get('X-Caption') ?? '';
  setImage(await blobToDataUrl(await res.blob()), `rendered: ${caption}`, false);
  if (caption) ui.caption.value = caption;
}

// ---------------------------------------------------------------- chat

function selectedSpeculation() {
  const checked = document.querySelector('input[name="spec"]:checked');
  return checked instanceof HTMLInputElement ? checked.value : 'AUTO';
}

function scrollChat() {
  ui.messages.scrollTop = ui.messages.scrollHeight;
}

/**
 * Keeps the last finished answer of each speculation mode side by side, so AUTO / OFF / CHAIN / TREE can be
 * compared.
 * @param {string} mode
 * @param {string[]} cells
 */
function recordComparison(mode, cells) {
  const body = ui.compare.tBodies[0];
  if (!body) return;
  let row = /** @type {HTMLTableRowElement | null} */ (body.querySelector(`tr[data-mode="${CSS.escape(mode)}"]`));
  if (!row) {
    row = body.insertRow();
    row.dataset.mode = mode;
  }
  row.replaceChildren(...[mode, ...cells].map((c) => h('td', undefined, c)));
  ui.compare.hidden = false;
}

/** @param {HTMLElement} node @param {string} text */
function setStat(node, text) { node.textContent = text; }

/** @param {string} [text]  '…' while an answer starts, '–' when it ended without any */
function resetStats(text = '…') {
  for (const n of [ui.stSteps, ui.stTokens, ui.stMal, ui.stRate, ui.stTps, ui.stTtft]) n.textContent = text;
  ui.chart.replaceChildren();
}

/**
 * @param {'user'|'assistant'} role
 * @param {string} text
 */
function addMessage(role, text) {
  const li = h('li', `msg ${role}`);
  const body = h('div', 'body', text);
  const meta = h('div', 'meta');
  li.append(body, meta);
  ui.messages.append(li);
  scrollChat();
  return { li, body, meta };
}

let chatStarting = false;
let jobStarting = false;

/**
 * Enables or disables a button. A disabled button loses focus (it drops to <body>), so focus on it moves
 * to `to` first.
 * @param {HTMLButtonElement} button
 * @param {boolean} disabled
 * @param {HTMLElement} to
 */
function setDisabled(button, disabled, to) {
  if (disabled && button === document.activeElement) to.focus();
  button.disabled = disabled;
}

/**
 * Ask, Generate and Edit, from what runs. A session runs one request at a time (the server answers
 * SESSION_BUSY otherwise), so while this page's answer uses the current session Generate and Edit wait,
 * and while its image job does, Ask waits; each says why. (After New session the old session's request
 * holds nothing back.) Edit needs an image on screen.
 */
function refreshButtons() {
  const chatRunning = chatStarting || stopChat !== null;
  const jobRunning = jobStarting || stopGeneration !== null;
  const chatHolds = chatRunning && (chatStarting || (chatSid !== null && chatSid === sessionId));
  const jobHolds = jobRunning && (jobStarting || (jobSid !== null && jobSid === sessionId));
  setDisabled(ui.chatSend, chatRunning || jobHolds, ui.chatInput);
  setDisabled(ui.genGenerate, jobRunning || chatHolds, ui.genPrompt);
  setDisabled(ui.genEdit, jobRunning || chatHolds || !current, ui.genPrompt);
  const chatHint = jobHolds && !chatRunning ? 'Ask waits for this session’s image job (a session runs one request at a time): Stop it, or start a New session.' : '';
  const genHint = chatHolds && !jobRunning
    ? 'Generate and Edit wait for this session’s answer (a session runs one request at a time): Stop it, or start a New session.'
    : !current ? 'Edit current image: no image on screen (upload, render or generate one).' : '';
  ui.chatHint.textContent = chatHint;
  ui.chatHint.hidden = !chatHint;
  ui.genHint.textContent = genHint;
  ui.genHint.hidden = !genHint;
  ui.genEdit.title = current ? '' : 'no image on screen';
}

/**
 * A request ended: the buttons come back, and focus on its Stop button moves to `to` (or `fallback` when
 * `to` stays disabled).
 * @param {HTMLButtonElement} stop
 * @param {HTMLButtonElement} to
 * @param {HTMLElement} fallback
 */
function requestEnded(stop, to, fallback) {
  refreshButtons();
  if (stop === document.activeElement) (to.disabled ? fallback : to).focus();
  stop.disabled = true;
}

/**
 * @param {{ prompt: string, notice: string }} [retry]  asking again in a new session after the old one
 *   expired: the question, and what to tell the user
 */
async function ask(retry) {
  const prompt = retry?.prompt ?? ui.chatInput.value.trim();
  // (Ask is disabled while this page's image job holds the session: see refreshButtons)
  if (!prompt || stopChat || chatStarting || (!retry && ui.chatSend.disabled)) return;
  clearError();
  chatStarting = true; // until stopChat is set below
  refreshButtons();
  const sid = await ensureSession();
  chatSid = sid;
  if (retry) showError('SESSION_NOT_FOUND', retry.notice, false);
  const releaseSession = useSession(sid);
  /** @type {Record<string, unknown>} */
  const input = {
    prompt,
    maxTokens: Number(ui.chatMax.value) || 48,
    temperature: Number(ui.chatTemp.value) || 0,
    speculation: { mode: selectedSpeculation() },
  };
  if (sid) input.sessionId = sid;
  const image = current;
  const sendImage = image && ui.chatAttach.checked && !(sid && image.chatHasIt);
  if (sendImage) input.image = { dataUrl: image.dataUrl };

  const user = addMessage('user', prompt);
  if (sendImage) user.meta.textContent = `with image · ${image.label}`;
  else if (!image && sessionHasImage && sid && sid === sessionId) {
    // Clear took the image off the screen, but the session still holds it and the model sees it: say so
    user.meta.textContent = 'no image on screen · the model still sees the image this session holds (New session asks without it)';
    user.li.dataset.sessionImage = 'true';
  }
  const bot = addMessage('assistant', '');
  bot.li.dataset.state = 'streaming';
  bot.li.dataset.chunks = '0';
  // screen readers announce the answer once, when it is complete, not once per chunk
  bot.li.setAttribute('aria-busy', 'true');
  bot.body.classList.add('cursor');
  resetStats();

  const started = performance.now();
  let chunks = 0, tokens = 0, steps = 0, accepted = 0, drafted = 0;
  /** @type {number | null} */
  let firstAt = null;

  /** @param {string} state @param {string} metaText */
  const finish = (state, metaText) => {
    bot.li.dataset.state = state;
    bot.li.removeAttribute('aria-busy');
    bot.body.classList.remove('cursor');
    bot.meta.textContent = metaText;
    scrollChat();
    // no chunk arrived (an error, a Stop before the first chunk): the stats say so instead of staying at …
    if (chunks === 0 && state !== 'done') resetStats('–');
    stopChat = null;
    chatSid = null;
    requestEnded(ui.chatStop, ui.chatSend, ui.chatInput);
    releaseSession();
  };

  /**
   * The request failed before any answer: an expired session is replaced and the question asked again
   * (once); anything else is shown.
   * @param {{ code: string, message: string }} e
   * @param {any[]} errors
   */
  const fail = (e, errors) => {
    if (e.code === 'SESSION_NOT_FOUND' && !retry && chunks === 0) {
      finish('error', 'session expired');
      user.li.remove();
      bot.li.remove();
      dropExpiredSession(sid);
      void ask({ prompt, notice: `Session ${sid} had expired on the server, so a new one was started (it does not remember the earlier turns) and the question was asked again.` });
      return;
    }
    if (e.code === 'CONNECTION_FAILED') {
      // The socket never opened: the question did not reach the server.
      showError(e.code, `server unreachable, the question was not sent: ${e.message}`);
      finish('error', 'not sent: server unreachable');
      return;
    }
    if (e.code === 'CONNECTION_CLOSED') {
      if (errors[0]?.extensions?.closeCode === 1009 && sendImage) refuseImage(image, 'IMAGE_TOO_LARGE');
      // The socket dropped mid-answer: keep what arrived and say plainly that it is incomplete.
      showError(e.code, `connection lost while answering: ${e.message}`);
      finish('connection-lost', `connection lost after ${chunks} chunk${chunks === 1 ? '' : 's'} · answer incomplete`);
      return;
    }
    serverError(e, ui.chatVocab);
    if (sendImage) refuseImage(image, e.code);
    finish('error', `error: ${e.code}`);
  };

  ui.chatStop.disabled = false;
  const unsubscribe = client.subscribe({ query: UNDERSTAND, variables: { input } }, {
    next: (payload) => {
      if (payload.errors?.length) {
        unsubscribe();
        fail(firstError(payload.errors), payload.errors);
        return;
      }
      const ev = payload.data?.understand;
      if (!ev) return;
      // (not after New session: the image belongs to the old session then)
      if (sendImage && image && sid && sid === sessionId) {
        image.chatHasIt = image.sessionLatest = true;
        sessionHasImage = true;
      }
      const n = Array.isArray(ev.tokenIds) ? ev.tokenIds.length : 0;
      const s = Math.max(1, ev.steps ?? 1);
      if (ev.text || n > 0) {
        chunks++;
        firstAt ??= performance.now();
        bot.body.textContent += ev.text ?? '';
        bot.li.dataset.chunks = String(chunks);
        scrollChat();
        tokens += n;
        steps += s;
        accepted += ev.acceptedTokens ?? 0;
        drafted += ev.draftedTokens ?? 0;
        const bar = h('span', 'bar');
        const perStep = n / s;
        const maxPerStep = (ev.draftedTokens ?? 0) / s + 1;
        bar.style.setProperty('--h', String(Math.min(1, perStep / 8)));
        bar.style.setProperty('--g', String(Math.min(1, maxPerStep / 8)));
        bar.title = `${n} token${n === 1 ? '' : 's'} in ${s} step${s === 1 ? '' : 's'} (${ev.acceptedTokens} of ${ev.draftedTokens} drafted accepted)`;
        ui.chart.append(bar);
        const seconds = (performance.now() - started) / 1000;
        setStat(ui.stSteps, String(steps));
        setStat(ui.stTokens, String(tokens));
        setStat(ui.stMal, (tokens / steps).toFixed(2));
        setStat(ui.stRate, drafted ? `${((accepted / drafted) * 100).toFixed(0)}%` : 'no drafts');
        setStat(ui.stTps, seconds > 0 ? (tokens / seconds).toFixed(1) : '…');
        setStat(ui.stTtft, `${(firstAt - started).toFixed(0)} ms`);
      }
      if (ev.done) {
        const sp = ev.speculation;
        const t = ev.timings;
        if (sp) {
          // Without drafts every step yields exactly one token.
          setStat(ui.stMal, sp.drafts ? Number(sp.meanAcceptedLength).toFixed(2) : '1.00 (no drafts)');
          setStat(ui.stRate, sp.drafts ? `${(Number(sp.acceptanceRate) * 100).toFixed(0)}%` : 'no drafts');
        }
        if (t) {
          setStat(ui.stTps, Number(t.tokensPerSecond).toFixed(1));
          setStat(ui.stTtft, `${Number(t.timeToFirstTokenMs).toFixed(0)} ms`);
        }
        if (ev.usage) setStat(ui.stTokens, String(ev.usage.completionTokens));
        if (sp && t && ev.usage) {
          recordComparison(String(sp.mode), [
            String(ev.usage.completionTokens),
            String(steps),
            sp.drafts ? Number(sp.meanAcceptedLength).toFixed(2) : '1.00',
            sp.drafts ? `${(Number(sp.acceptanceRate) * 100).toFixed(0)}%` : '–',
            Number(t.tokensPerSecond).toFixed(1),
          ]);
        }
        finish('done', `${String(ev.finishReason ?? '').toLowerCase()} · ${chunks} chunk${chunks === 1 ? '' : 's'} · ${sp?.mode ?? ''} · ${t ? `${Number(t.totalMs).toFixed(0)} ms` : ''}`);
      }
    },
    error: (errors) => fail(firstError(errors), errors),
    complete: () => {
      if (bot.li.dataset.state === 'streaming') finish('done', `${chunks} chunk${chunks === 1 ? '' : 's'}`);
    },
  });
  stopChat = () => {
    unsubscribe();
    finish('cancelled', `stopped after ${chunks} chunk${chunks === 1 ? '' : 's'}`);
  };
  chatStarting = false;
  refreshButtons();
}

// ---------------------------------------------------------------- generate and edit

/** @param {any} frame */
function frameDataUrl(frame) {
  return `data:${frame.image.mimeType};base64,${frame.image.base64}`;
}

/**
 * An intermediate preview of a multi-step sampler (intermediatePreviews): its sampler and step, e.g.
 * "6-NFE step 1/6" (`distilled-6nfe`) or "euler-6 step 1/6"; null for any other frame. A 1-NFE preview and
 * the 6-NFE sampler's first step share nfe and step: only `sampler` tells them apart.
 * @param {any} frame
 * @returns {string | null}
 */
function samplerStep(frame) {
  if (frame.stage !== 'PREVIEW' || typeof frame.sampler !== 'string') return null;
  const distilled = /^distilled-(\d+)nfe\b/.exec(frame.sampler);
  const euler = /^euler-(\d+)\b/.exec(frame.sampler);
  const steps = Number((distilled ?? euler)?.[1]);
  if (!steps || !(Number(frame.step) < steps)) return null;
  return `${distilled ? `${steps}-NFE` : `euler-${steps}`} step ${frame.step}/${steps}`;
}

/** @param {any} frame */
function frameLabel(frame) {
  const step = samplerStep(frame);
  return `${String(frame.stage).toLowerCase()}${step ? ` · ${step}` : ''} · ${frame.nfe} NFE · ${Number(frame.elapsedMs).toFixed(0)} ms`;
}

/** @param {any} frame */
function addFrame(frame) {
  const li = h('li', `frame ${String(frame.stage).toLowerCase()}`);
  li.dataset.stage = String(frame.stage);
  li.dataset.nfe = String(frame.nfe);
  if (typeof frame.sampler === 'string') li.dataset.sampler = frame.sampler;
  li.title = frame.sampler ? `sampler ${frame.sampler}, step ${frame.step}` : '';
  const img = /** @type {HTMLImageElement} */ (h('img'));
  img.src = frameDataUrl(frame);
  img.alt = frameLabel(frame);
  li.append(img, h('span', 'cap', frameLabel(frame)));
  ui.frames.append(li);
}

/**
 * @param {'generate'|'edit'} action
 * @param {{ text: string, notice: string }} [retry]  starting again in a new session after the old one
 *   expired: the prompt, and what to tell the user
 */
async function runJob(action, retry) {
  const text = retry?.text ?? ui.genPrompt.value.trim();
  // (disabled while this page's answer holds the session, and Edit while no image is on screen: refreshButtons)
  if (!text || stopGeneration || jobStarting || (!retry && (action === 'edit' ? ui.genEdit : ui.genGenerate).disabled)) return;
  clearError();
  jobStarting = true; // until stopGeneration is set below
  refreshButtons();
  const sid = await ensureSession();
  jobSid = sid;
  if (retry) showError('SESSION_NOT_FOUND', retry.notice, false);
  const releaseSession = useSession(sid);
  /** @type {Record<string, unknown>} */
  const input = { mode: ui.genMode.value };
  if (ui.genIntermediate.checked) input.intermediatePreviews = true;
  if (action === 'generate' && ui.genThink.checked && !ui.genThinkLabel.hidden) input.think = true;
  if (ui.genSeed.value !== '') input.seed = Number(ui.genSeed.value);
  if (ui.genGuidance.value !== '') input.cfgTextScale = Number(ui.genGuidance.value);
  if (sid) input.sessionId = sid;
  const source = current;
  if (action === 'generate') {
    input.prompt = text;
  } else {
    input.instruction = text;
    // With a session the server uses the session's latest image; send ours only if it is not that one
    // (an upload, a rendered scene, a preview, a final of an earlier session).
    if (source && (!sid || !source.sessionLatest)) input.image = { dataUrl: source.dataUrl };
  }

  ui.frames.replaceChildren();
  ui.genThought.hidden = true;
  ui.genThought.textContent = '';
  ui.genStatus.dataset.state = 'running';
  ui.genStatus.textContent = `${action === 'generate' ? 'generating' : 'editing'}…`;
  delete ui.genStatus.dataset.serverStatus;
  delete ui.genStatus.dataset.job;
  ui.genStop.disabled = false;

  const started = performance.now();
  /** @type {string | null} */
  let jobId = null;
  let shownPreviews = 0;
  let gotFinal = false;
  /** seq of the last event received: where a resumed `imageJob` picks up */
  let lastSeq = 0;
  let attempt = 0;
  /** `imageJob` refusals (RATE_LIMITED) in a row */
  let rateLimited = 0;
  let stopped = false;
  /** @type {(() => void) | null} */
  let unsubscribe = null;
  /** @type {ReturnType<typeof setTimeout> | undefined} */
  let retryTimer;

  /** @param {string} state @param {string} text */
  const finish = (state, text) => {
    ui.genStatus.dataset.state = state;
    ui.genStatus.textContent = text;
    stopGeneration = null;
    jobSid = null;
    requestEnded(ui.genStop, ui.genGenerate, ui.genPrompt);
    if (runningJobId === jobId) runningJobId = null;
    releaseSession();
  };
  /**
   * The job may have produced a final this page never showed: it is then the session's latest image, so
   * the next edit sends the image on screen, and a question sees that final.
   */
  const unseenFinal = () => {
    forgetSessionImage();
    if (sid && sid === sessionId) sessionHasImage = true;
  };
  /**
   * Sends cancelJob for a job this page stops following; `then` gets what the server said (true: cancelled,
   * false: it had ended already) or the error code. A RATE_LIMITED cancel is sent again after the wait.
   * @param {string} id
   * @param {(result: boolean | string) => void} [then]
   */
  const cancel = (id, then, tries = 0) => {
    client.request({ query: CANCEL_JOB, variables: { id } }).then(
      (r) => then?.(r.data?.cancelJob === true),
      (err) => {
        const e = err instanceof GraphQLRequestError ? firstError(err.errors) : { ...describeError(err), extensions: {} };
        if (e.code === 'RATE_LIMITED' && tries < 3) setTimeout(() => cancel(id, then, tries + 1), retryAfterMs(e.extensions));
        else then?.(e.code);
      },
    );
  };
  /**
   * Appends what cancelJob answered to the job's status line, if that line still tells of this job.
   * @param {string} id @param {string} text @param {boolean | string} result
   */
  const cancelOutcome = (id, text, result) => {
    if (ui.genStatus.dataset.job !== id || ui.genStatus.textContent !== text) return;
    ui.genStatus.textContent = `${text} · ${result === true ? 'cancelled on the server' : result === false ? 'it had already ended on the server' : `the cancel did not reach the server (${result})`}`;
  };
  const progress = () => {
    if (jobId) ui.genStatus.dataset.job = jobId;
    ui.genStatus.dataset.state = 'running';
    ui.genStatus.textContent = `job ${jobId ?? '…'} · ${shownPreviews} preview${shownPreviews === 1 ? '' : 's'}${gotFinal ? ' · final' : ''}`;
  };

  /** The image this job may replace on screen: the one there when it started, then its own frames. */
  let mine = current;
  /** Another image was put on screen while the job ran, so the job's frames were not shown there. */
  let displaced = false;

  /** @param {any} frame */
  const showFrame = (frame) => {
    if (frame.thought && ui.genThought.hidden) {
      ui.genThought.textContent = `thought: ${frame.thought}`;
      ui.genThought.hidden = false;
    }
    addFrame(frame);
    const isFinal = frame.stage === 'FINAL';
    // The server stores only a FINAL frame as the session's latest image, and only in the session the
    // job ran in: a preview, or a final that arrives after New session, is not it (an edit sends it).
    const latest = isFinal && Boolean(sid) && sid === sessionId;
    if (latest) sessionHasImage = true;
    if (!isFinal) shownPreviews++;
    if (current !== null && current !== mine) {
      // The user put another image on screen (upload, drop, paste, render) while the job ran: keep it.
      displaced = true;
      if (latest) forgetSessionImage(); // the session's latest image is now this final, not the one on screen
    } else if (isFinal || !gotFinal) {
      // A preview never replaces a final that is already on screen.
      setImage(frameDataUrl(frame), frameLabel(frame), latest);
      mine = current;
    }
    if (isFinal) gotFinal = true;
  };

  /**
   * The server refused `imageJob` (the job itself runs on: the mutation started it). RATE_LIMITED: wait
   * as long as the server asks, then subscribe again after the last event seen, as after a dropped
   * connection. Anything else (TOO_MANY_SUBSCRIPTIONS, JOB_NOT_FOUND, …): nobody would see the job's
   * frames, and its final would become the session's latest image unseen (the next "Edit current image"
   * would edit it), so the job is cancelled and the next edit sends the image on screen.
   * @param {string} id
   * @param {{ code: string, message: string, extensions: Record<string, unknown> }} e
   */
  const refused = (id, e) => {
    if (e.code === 'RATE_LIMITED' && rateLimited < RATE_LIMIT_RETRIES) {
      rateLimited++;
      const wait = retryAfterMs(e.extensions);
      ui.genStatus.dataset.state = 'reconnecting';
      ui.genStatus.textContent = `rate limited by the server · following job ${id} again in ${wait} ms · ${lastSeq} event${lastSeq === 1 ? '' : 's'} received`;
      retryTimer = setTimeout(() => { if (!stopped) watch(id); }, wait);
      return;
    }
    serverError(e);
    unseenFinal();
    const text = `failed: ${e.code} · stopped following job ${id}, cancel sent`;
    finish('error', text);
    cancel(id, (result) => cancelOutcome(id, text, result));
  };

  /** @param {string} id */
  const watch = (id) => {
    unsubscribe = client.subscribe({ query: IMAGE_JOB, variables: { id, after: lastSeq } }, {
      next: (payload) => {
        const ev = payload.data?.imageJob;
        if (!ev) {
          if (payload.errors?.length) {
            unsubscribe?.();
            refused(id, firstError(payload.errors));
          }
          return;
        }
        attempt = 0;
        rateLimited = 0;
        if (typeof ev.seq === 'number') {
          if (ev.seq <= lastSeq) return; // already shown before a reconnect
          lastSeq = ev.seq;
        }
        if (ev.frame) showFrame(ev.frame);
        if (!ev.done) { progress(); return; }
        const ms = (performance.now() - started).toFixed(0);
        const previewsText = shownPreviews ? `${shownPreviews} preview${shownPreviews === 1 ? '' : 's'} then final` : 'final only';
        if (ev.status === 'SUCCEEDED' && gotFinal) {
          finish('done', `job ${id} done in ${ms} ms · ${previewsText}${displaced ? ' · not put on screen, another image was put there meanwhile (the frames are listed below)' : ''}`);
        } else if (ev.error) {
          serverError({ code: ev.error.code, message: ev.error.message }, ui.genVocab);
          if (input.image) refuseImage(source, ev.error.code);
          finish('error', `failed: ${ev.error.code}`);
        } else if (ev.status === 'CANCELLED') finish('cancelled', `cancelled job ${id} · server status CANCELLED`);
        else finish('error', `job ${id} ended without a final image`);
      },
      error: (errors) => {
        const e = firstError(errors);
        if ((e.code === 'CONNECTION_CLOSED' || e.code === 'CONNECTION_FAILED') && !stopped && attempt < RESUME_ATTEMPTS) {
          // The socket dropped while the job runs on the server: reconnect and resume after the last event.
          attempt++;
          const delay = RESUME_BASE_DELAY_MS * 2 ** (attempt - 1);
          ui.genStatus.dataset.state = 'reconnecting';
          ui.genStatus.textContent = `connection lost · reconnecting in ${delay} ms (attempt ${attempt}/${RESUME_ATTEMPTS}) · job ${id} · ${lastSeq} event${lastSeq === 1 ? '' : 's'} received`;
          retryTimer = setTimeout(() => { if (!stopped) watch(id); }, delay);
          return;
        }
        const lost = e.code === 'CONNECTION_CLOSED' || e.code === 'CONNECTION_FAILED';
        if (!lost) { refused(id, e); return; }
        serverError(e);
        // The job may still run on the server, and its final would become the session's latest image:
        // cancel it if the server can be reached (it may not be), and send the image on screen with the next edit.
        unseenFinal();
        const text = `connection lost: gave up on job ${id} after ${attempt} reconnect attempt${attempt === 1 ? '' : 's'} (cancel attempted)`;
        finish('error', text);
        cancel(id, (result) => cancelOutcome(id, text, result));
      },
      complete: () => {
        // (also after a reconnect: a job that ended meanwhile may have nothing left to send)
        const state = ui.genStatus.dataset.state;
        if (stopGeneration && (state === 'running' || state === 'reconnecting')) finish('error', `job ${id} ended without a final image`);
      },
    });
  };

  stopGeneration = () => {
    stopped = true;
    clearTimeout(retryTimer);
    unsubscribe?.();
    const id = jobId;
    if (!id) {
      // The server may be starting the job: the buttons come back once its id has arrived and cancelJob
      // is sent (below), so a Generate pressed at once does not meet it still holding the session.
      ui.genStatus.dataset.state = 'cancelling';
      ui.genStatus.textContent = 'cancelling…';
      ui.genStop.disabled = true;
      return;
    }
    finish('cancelled', `cancelled job ${id}`);
    // The job is detached, so stopping the subscription alone does not end it: cancelJob does, then we
    // report what the server says the job's status is.
    client.request({ query: CANCEL_JOB, variables: { id } })
      .catch(() => undefined)
      .then(() => client.request({ query: JOB_STATUS, variables: { id } }))
      .then((r) => {
        const status = r.data?.job?.status;
        // the job finished before the cancel reached it (cancelJob answers false): its final, never shown
        // here, is now the session's latest image, so the next edit sends the image on screen
        if (status === 'SUCCEEDED') unseenFinal();
        if (status && ui.genStatus.dataset.state === 'cancelled') {
          ui.genStatus.textContent = `cancelled job ${id} · server status ${status}`;
          ui.genStatus.dataset.serverStatus = status;
        }
      })
      .catch(() => undefined);
  };
  jobStarting = false;
  refreshButtons();

  const field = action === 'generate' ? 'generateImage' : 'editImage';
  try {
    const r = await client.request({ query: action === 'generate' ? GENERATE : EDIT, variables: { input } });
    jobId = String(r.data?.[field]?.id ?? '') || null;
  } catch (err) {
    if (stopped) { finish('cancelled', 'cancelled'); return; }
    const e = err instanceof GraphQLRequestError ? firstError(err.errors) : describeError(err);
    if (e.code === 'SESSION_NOT_FOUND' && !retry) {
      finish('error', 'session expired');
      dropExpiredSession(sid);
      void runJob(action, { text, notice: `Session ${sid} had expired on the server, so a new one was started and the job was started again.` });
      return;
    }
    serverError(e, ui.genVocab);
    const closeCode = err instanceof GraphQLRequestError ? err.errors[0]?.extensions?.closeCode : undefined;
    if (input.image) refuseImage(source, closeCode === 1009 ? 'IMAGE_TOO_LARGE' : e.code);
    if (e.code === 'CONNECTION_CLOSED') {
      // The server may have started the job before the reply was lost: its final would then become the
      // session's latest image, not the one on screen, so the next edit sends the image on screen.
      unseenFinal();
      finish('error', `failed: ${e.code} · the job may still run on the server; the next edit sends the image on screen`);
      return;
    }
    if (e.code === 'CONNECTION_FAILED') {
      // The socket never opened: the mutation did not reach the server.
      finish('error', `failed: ${e.code} · the server could not be reached; no job was started`);
      return;
    }
    finish('error', `failed: ${e.code}`);
    return;
  }
  if (!jobId) { finish(stopped ? 'cancelled' : 'error', stopped ? 'cancelled' : 'the server returned no job id'); return; }
  if (stopped) {
    // Stop was pressed before the job id arrived: cancel it now, then give the buttons back.
    const id = jobId;
    const r = await client.request({ query: CANCEL_JOB, variables: { id } }).catch(() => undefined);
    // false: the job had already produced its final (now the session's latest image, never shown here)
    if (r?.data?.cancelJob === false) unseenFinal();
    finish('cancelled', `cancelled job ${id}`);
    return;
  }
  runningJobId = jobId;
  progress();
  watch(jobId);
}

// ---------------------------------------------------------------- wiring

ui.errorClose.addEventListener('click', clearError);
ui.genMode.addEventListener('change', showGuidanceRange);
ui.image.addEventListener('error', () => {
  if (!ui.image.getAttribute('src')) return;
  ui.image.hidden = true;
  ui.dropHint.hidden = false;
  ui.dropHint.textContent = 'The browser cannot display this file';
});
ui.image.addEventListener('load', () => { ui.dropHint.textContent = DROP_HINT; });
ui.newSession.addEventListener('click', () => { void resetSession(); });
ui.fileInput.addEventListener('change', () => {
  const file = ui.fileInput.files?.[0];
  if (file) void attachFile(file);
  ui.fileInput.value = '';
});
ui.dropzone.addEventListener('dragover', (ev) => { ev.preventDefault(); ui.dropzone.classList.add('over'); });
ui.dropzone.addEventListener('dragleave', () => ui.dropzone.classList.remove('over'));
ui.dropzone.addEventListener('drop', (ev) => {
  ev.preventDefault();
  ui.dropzone.classList.remove('over');
  const file = ev.dataTransfer?.files?.[0];
  if (file) void attachFile(file);
});
ui.dropzone.addEventListener('keydown', (ev) => {
  if (ev.key === 'Enter' || ev.key === ' ') { ev.preventDefault(); ui.fileInput.click(); }
});
// (role=button: a click chooses a file too)
ui.dropzone.addEventListener('click', () => ui.fileInput.click());
// Ctrl+Enter (⌘+Enter) in the prompt: Generate (Enter alone starts a new line)
ui.genPrompt.addEventListener('keydown', (ev) => {
  if (ev.key === 'Enter' && (ev.ctrlKey || ev.metaKey)) {
    ev.preventDefault();
    if (!ui.genGenerate.disabled) ui.genForm.requestSubmit(ui.genGenerate);
  }
});
// Pasting an image anywhere on the page attaches it, as in chat apps.
document.addEventListener('paste', (ev) => {
  const file = [...(ev.clipboardData?.files ?? [])].find((f) => f.type.startsWith('image/'));
  if (file) { ev.preventDefault(); void attachFile(file); }
});
ui.randomScene.addEventListener('click', () => {
  void renderScene(new URLSearchParams({ seed: String(Math.floor(Math.random() * 100000)) }));
});
ui.clearImage.addEventListener('click', clearImage);
ui.renderForm.addEventListener('submit', (ev) => {
  ev.preventDefault();
  void renderScene(new URLSearchParams({ caption: ui.caption.value }));
});
ui.chatForm.addEventListener('submit', (ev) => { ev.preventDefault(); void ask(); });
ui.chatStop.addEventListener('click', () => stopChat?.());
ui.genForm.addEventListener('submit', (ev) => { ev.preventDefault(); void runJob('generate'); });
ui.genEdit.addEventListener('click', () => { void runJob('edit'); });
ui.genStop.addEventListener('click', () => stopGeneration?.());
// Reload, navigation, closed tab: close this page's sessions on the server.
addEventListener('pagehide', closeOnExit);
addEventListener('pageshow', (ev) => {
  // Back from the back/forward cache: the sessions were closed when the page was hidden.
  if (ev.persisted) {
    leaving = false;
    sessionHasImage = false;
    forgetSessionImage();
    ui.messages.replaceChildren();
    void ensureSession();
  }
});

refreshButtons();
document.body.dataset.ready = 'true';
void loadModel();
void ensureSession();
