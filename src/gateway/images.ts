// Image input decoding (base64 / data URL / multipart upload) with byte and pixel limits, and the
// bounded in-memory store behind `Image.url`.
import { randomBytes } from 'node:crypto';
import { decodeInputImage, type DecodeProblem, type ImageFormat } from '../engine/image/codec.ts';
import { EngineError, type RgbImage } from '../engine/types.ts';
import { GatewayError } from './errors.ts';
import { REPLICA_ID_RE } from './replicas.ts';
import type { ImageInput } from './schema-types.ts';

// the bounded decode is the engine's (shared with the command line); re-exported for the resolvers and tests
export { MAX_DECODED_SIDE, sentSizeOf } from '../engine/image/codec.ts';

const BASE64_RE = /^[A-Za-z0-9+/]*={0,2}$/;
const DATA_URL_RE = /^data:(image\/[a-z0-9.+-]+)?(;[a-z0-9=.-]+)*;base64,/i;

/** Input formats, as sharp names them: PNG, JPEG and WebP (schema.graphql's ImageInput). */
const ACCEPTED_FORMATS: ImageFormat[] = ['png', 'jpeg', 'webp'];

export interface ImageLimits {
  maxImageBytes: number;
  maxImagePixels: number;
}

interface UploadLike {
  size: number;
  type?: string;
  arrayBuffer(): Promise<ArrayBuffer>;
}
function isUpload(v: unknown): v is UploadLike {
  return !!v && typeof v === 'object' && typeof (v as UploadLike).arrayBuffer === 'function' && typeof (v as UploadLike).size === 'number';
}

function tooLarge(bytes: number, limit: number): GatewayError {
  return new GatewayError('IMAGE_TOO_LARGE', `The image is ${bytes} bytes; the limit is ${limit}`, { argument: 'image', bytes, limit });
}

/** ASCII whitespace: line-wrapped base64 (the `base64` tool's 76 columns, MIME) is still base64. */
const WHITESPACE_RE = /[\t\n\f\r ]+/g;

function decodeBase64(b64: string, limits: ImageLimits, what: string): Buffer {
  const s = b64.replace(WHITESPACE_RE, '');
  // the decoded size, exactly for valid input: the padding encodes no bytes
  const padding = s.endsWith('==') ? 2 : s.endsWith('=') ? 1 : 0;
  const estimated = Math.max(0, Math.floor((s.length * 3) / 4) - padding);
  if (estimated > limits.maxImageBytes) throw tooLarge(estimated, limits.maxImageBytes);
  if (s.length === 0 || s.length % 4 === 1 || !BASE64_RE.test(s)) throw new GatewayError('BAD_IMAGE', `${what} is not valid base64`, { argument: what });
  return Buffer.from(s, 'base64');
}

/** Returns the encoded bytes of exactly one of the input's variants. */
export async function readImageInput(input: ImageInput, limits: ImageLimits): Promise<Buffer> {
  const given = (['base64', 'dataUrl', 'upload'] as const).filter((k) => input[k] !== undefined && input[k] !== null);
  if (given.length !== 1) throw new GatewayError('INVALID_INPUT', 'ImageInput needs exactly one of base64, dataUrl or upload', { argument: 'image' });
  if (input.base64 != null) return decodeBase64(input.base64, limits, 'image.base64');
  if (input.dataUrl != null) {
    const m = DATA_URL_RE.exec(input.dataUrl);
    if (!m) throw new GatewayError('BAD_IMAGE', 'image.dataUrl must be a data:image/...;base64,... URL', { argument: 'image.dataUrl' });
    return decodeBase64(input.dataUrl.slice(m[0].length), limits, 'image.dataUrl');
  }
  const up = input.upload;
  if (!isUpload(up)) throw new GatewayError('INVALID_INPUT', 'image.upload must be a multipart file upload', { argument: 'image.upload' });
  if (up.size > limits.maxImageBytes) throw tooLarge(up.size, limits.maxImageBytes);
  return Buffer.from(await up.arrayBuffer());
}

/**
 * Decodes to RGB with the engine's decodeInputImage, the decode the command line uses too (turned
 * upright from its EXIF orientation, alpha flattened on white, larger than MAX_DECODED_SIDE a side:
 * centre-cropped and scaled down), enforcing this gateway's byte and pixel limits before the full
 * decode. Any size within the limits is fine: the engine centre-crops and resizes to the model's
 * vision size. Refusals are the gateway's BAD_IMAGE / IMAGE_TOO_LARGE.
 */
export async function decodeImage(bytes: Buffer, limits: ImageLimits): Promise<RgbImage> {
  if (bytes.byteLength > limits.maxImageBytes) throw tooLarge(bytes.byteLength, limits.maxImageBytes);
  try {
    return await decodeInputImage(new Uint8Array(bytes.buffer, bytes.byteOffset, bytes.byteLength), { maxPixels: limits.maxImagePixels, formats: ACCEPTED_FORMATS });
  } catch (e) {
    throw decodeRefusal(e, limits);
  }
}

/** The engine's decode refusal (EngineError BAD_IMAGE, `details.problem`) as the gateway's error. */
function decodeRefusal(e: unknown, limits: ImageLimits): GatewayError {
  const d = e instanceof EngineError ? (e.details ?? {}) : {};
  switch (d['problem'] as DecodeProblem | undefined) {
    case 'pixels': {
      const { width, height } = d as { width: number; height: number };
      return new GatewayError('IMAGE_TOO_LARGE', `The image has ${width * height} pixels; the limit is ${limits.maxImagePixels}`, {
        argument: 'image',
        width,
        height,
        limit: limits.maxImagePixels,
      });
    }
    // sharp decodes more (GIF, TIFF, SVG, HEIF, ...); the API promises these three only
    case 'format':
      return new GatewayError('BAD_IMAGE', 'Unsupported image format; use PNG, JPEG or WebP', { argument: 'image' });
    case 'empty':
    case 'unreadable':
      return new GatewayError('BAD_IMAGE', 'The image could not be decoded (corrupt or unsupported format)', { argument: 'image' });
    default:
      return new GatewayError('BAD_IMAGE', 'The image could not be decoded (corrupt or truncated data)', { argument: 'image' });
  }
}

export async function imageFromInput(input: ImageInput, limits: ImageLimits): Promise<RgbImage> {
  return decodeImage(await readImageInput(input, limits), limits);
}

interface StoredImage {
  bytes: Uint8Array;
  mimeType: string;
  sha256: string;
  expiresAt: number;
}

/** Bounded LRU of encoded images, addressed by unguessable tokens. */
export class ImageStore {
  private readonly items = new Map<string, StoredImage>();
  private total = 0;

  constructor(
    private readonly maxBytes: number,
    private readonly ttlMs: number,
    private readonly now: () => number = Date.now,
    /** this replica's id, which prefixes its tokens (`<replica>_<hex>`) so any replica can route an image URL */
    private readonly replicaId?: string,
  ) {}

  get bytes(): number {
    return this.total;
  }
  get count(): number {
    return this.items.size;
  }

  put(bytes: Uint8Array, mimeType: string, sha256: string): string {
    const token = (this.replicaId ? `${this.replicaId}_` : '') + randomBytes(16).toString('hex');
    this.items.set(token, { bytes, mimeType, sha256, expiresAt: this.now() + this.ttlMs });
    this.total += bytes.byteLength;
    this.evict();
    return token;
  }

  get(token: string): StoredImage | undefined {
    const it = this.items.get(token);
    if (!it) return undefined;
    if (it.expiresAt < this.now()) {
      this.delete(token);
      return undefined;
    }
    // refresh LRU position
    this.items.delete(token);
    this.items.set(token, it);
    return it;
  }

  private delete(token: string): void {
    const it = this.items.get(token);
    if (!it) return;
    this.items.delete(token);
    this.total -= it.bytes.byteLength;
  }

  private evict(): void {
    const now = this.now();
    for (const [token, it] of this.items) {
      if (this.total <= this.maxBytes && it.expiresAt >= now) break;
      this.delete(token);
    }
  }
}

/** `[<replica id>_]<32 hex>[.<ext>]` (the replica id without its anchors) */
const TOKEN_RE = new RegExp(`^((?:(${REPLICA_ID_RE.source.slice(1, -1)})_)?[0-9a-f]{32})(\\.(?:png|jpg|webp|bin))?$`);

/**
 * `/images/<token>[.<ext>]` -> the token, the replica it names (undefined: a plain token) and the
 * canonical name to ask that replica for; null for anything else (so no other path can be built from it).
 */
export function parseImageToken(name: string): { token: string; owner?: string; name: string; ext?: string } | null {
  const m = TOKEN_RE.exec(name);
  return m ? { token: m[1]!, owner: m[2], name: m[1]! + (m[3] ?? ''), ...(m[3] ? { ext: m[3].slice(1) } : {}) } : null;
}

/** Does a URL's extension (if any) name the image's type? (`.bin`: a type with no extension of its own) */
export function extensionFits(ext: string | undefined, mimeType: string): boolean {
  return ext === undefined || ext === (IMAGE_EXT[mimeType] ?? 'bin');
}

export const IMAGE_EXT: Record<string, string> = { 'image/png': 'png', 'image/jpeg': 'jpg', 'image/webp': 'webp' };
