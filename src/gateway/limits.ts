// Limits, all on by default. Query-shape limits are graphql-js validation rules so they run for
// HTTP and graphql-ws alike (both go through yoga's envelop pipeline).
import {
  GraphQLError,
  Kind,
  getNamedType,
  isCompositeType,
  isListType,
  isNonNullType,
  type ASTVisitor,
  type FieldNode,
  type FragmentDefinitionNode,
  type GraphQLOutputType,
  type GraphQLType,
  type SelectionSetNode,
  type ValidationContext,
  type ValidationRule,
} from 'graphql/index.js'; // the CJS entry yoga uses: one graphql instance under tsx and vitest

export interface GatewayLimits {
  /** Max selection depth (introspection fields are not counted: GraphiQL's schema query nests deeper). */
  maxDepth: number;
  maxAliases: number;
  /** Max lexical tokens in a document (enforced by the parser). */
  maxTokens: number;
  /**
   * Characters in a GraphQL document (QUERY_TOO_COMPLEX beyond it), checked before it is parsed: the token
   * limit does not count the length of strings and comments. Large values (images) go in variables.
   */
  maxQueryChars: number;
  maxDirectives: number;
  /** Estimated cost: objects 2, scalars 1, x1.5 per nesting level, lists x10. */
  maxCost: number;
  /** Max characters in a prompt or edit instruction. */
  maxPromptChars: number;
  /** Max `maxTokens` an understand request may ask for. */
  maxNewTokens: number;
  /** Max `stop` strings; the effective limit is at most the engine's (MAX_STOP_SEQUENCES, 8). */
  maxStopSequences: number;
  /** Max characters per `stop` string; the effective limit is at most the engine's (MAX_STOP_CHARS, 64). */
  maxStopChars: number;
  /** Max encoded image size in bytes. */
  maxImageBytes: number;
  /** Max decoded image size in pixels. */
  maxImagePixels: number;
  /** Max HTTP body / WebSocket message size in bytes. */
  maxBodyBytes: number;
  /** Jobs (understand streams + image jobs) running in the engine at once. */
  maxConcurrentJobs: number;
  /** Jobs waiting for a slot; beyond this a request fails with BUSY. */
  maxQueuedJobs: number;
  /**
   * Of those, the most one client (its API key when auth is on, else its IP address) may hold, so others
   * always find a place; beyond it that client's request fails with BUSY. Default: 3/4 of maxQueuedJobs.
   */
  maxQueuedPerClient?: number;
  /** Concurrent operations per graphql-ws connection. */
  maxSubscriptionsPerSocket: number;
  maxSessions: number;
  /**
   * With auth on, the most one API key may hold of those: its next createSession closes its own least
   * recently used idle session, never another key's. Default: 3/4 of maxSessions. (Without auth there is
   * no share: one address may be a whole NAT, a proxy or this machine.)
   */
  maxSessionsPerClient?: number;
  /** Idle time after which a session expires. */
  sessionTtlMs: number;
  /** Tokens a session's context may accumulate (the engine's count when it reports one). */
  maxSessionTokens: number;
  /** Bytes one session may hold (KV cache as allocated + its latest image, from Engine.sessionInfo); beyond it SESSION_FULL. */
  maxSessionBytes: number;
  /** Bytes all sessions together may hold; beyond it least recently used idle sessions are evicted. */
  maxTotalSessionBytes: number;
  /** How long finished image jobs stay available for `imageJob`/`job`. */
  jobRetentionMs: number;
  maxRetainedJobs: number;
  /** A job no client watches is cancelled after this long. */
  unwatchedJobTimeoutMs: number;
  /** Bytes of encoded images kept for `Image.url`. */
  imageStoreBytes: number;
  imageStoreTtlMs: number;
  /** An engine stream silent for this long is abandoned with an INTERNAL error (never a hang). */
  engineStallTimeoutMs: number;
  /** Sustained GraphQL operations per second per API key (per client IP when auth is off); 0 = off. */
  rateLimitPerSecond: number;
  /** Operations a client may start in a burst before `rateLimitPerSecond` applies. */
  rateLimitBurst: number;
  /** A graphql-ws socket whose send buffer stays above this many bytes ... */
  maxSocketBufferedBytes: number;
  /** ... for this long is closed with code 4008 ("slow consumer"). */
  slowSocketGraceMs: number;
  /**
   * Characters of an understand stream's text that may wait, coalesced, for a slow client (they wait in
   * the stream, before the socket); beyond it the stream ends with SLOW_CONSUMER. Real answers are far
   * smaller (maxNewTokens words): this bounds that text however long an engine's tokens are. 0 = none.
   */
  maxStreamBacklogChars: number;
  /**
   * graphql-ws sockets are pinged this often, and one that has neither answered the previous ping nor
   * let the kernel take any of its data by the next (or has not answered for 3 intervals in a row,
   * whatever it took) is terminated: a client gone without closing
   * (network lost, device asleep, NAT entry expired). Browsers and ws answer pings on their own.
   * 0 = off (graphql-ws's own keep-alive is off either way).
   */
  wsPingIntervalMs: number;
  /** Open graphql-ws connections, in all and per client (the API key in the upgrade's Authorization
   * header, else its address, an IPv6 one by its /64); an upgrade beyond either gets HTTP 429, so one
   * client stuck in a reconnect loop cannot take every connection (keep the total under the process's
   * file-descriptor limit, `ulimit -n`). 0 = no limit. */
  maxWsConnections: number;
  maxWsConnectionsPerClient: number;
  /** Open streamed HTTP responses (SSE, multipart/mixed), in all and per client (API key, else address),
   * graphql-ws's connection limits for HTTP: a request beyond either gets 429. 0 = no limit. */
  maxHttpStreams: number;
  maxHttpStreamsPerClient: number;
}

/**
 * One client's default share of `n` places (queued jobs, sessions): ¾ of them, but at least one place left
 * for the others whenever there are two or more (¾ of 2 or 3, rounded up, was all or all but none).
 */
export function defaultShare(n: number): number {
  return n >= 2 ? Math.min(n - 1, Math.ceil(0.75 * n)) : n;
}

export const DEFAULT_LIMITS: GatewayLimits = {
  maxDepth: 6,
  maxAliases: 15,
  maxTokens: 1000,
  maxQueryChars: 256 * 1024,
  maxDirectives: 50,
  maxCost: 5000,
  maxPromptChars: 4000,
  maxNewTokens: 1024,
  maxStopSequences: 8,
  maxStopChars: 64,
  maxImageBytes: 20 * 1024 * 1024,
  maxImagePixels: 25_000_000,
  maxBodyBytes: 32 * 1024 * 1024,
  maxConcurrentJobs: 4,
  maxQueuedJobs: 32,
  maxSubscriptionsPerSocket: 16,
  maxSessions: 64,
  sessionTtlMs: 15 * 60_000,
  maxSessionTokens: 8192,
  maxSessionBytes: 256 * 1024 * 1024,
  maxTotalSessionBytes: 2 * 1024 * 1024 * 1024,
  jobRetentionMs: 5 * 60_000,
  maxRetainedJobs: 256,
  unwatchedJobTimeoutMs: 60_000,
  imageStoreBytes: 64 * 1024 * 1024,
  imageStoreTtlMs: 10 * 60_000,
  engineStallTimeoutMs: 120_000,
  rateLimitPerSecond: 50,
  rateLimitBurst: 200,
  maxSocketBufferedBytes: 8 * 1024 * 1024,
  slowSocketGraceMs: 10_000,
  maxStreamBacklogChars: 8 * 1024 * 1024,
  wsPingIntervalMs: 30_000,
  maxWsConnections: 10_000,
  maxWsConnectionsPerClient: 256,
  maxHttpStreams: 10_000,
  maxHttpStreamsPerClient: 64,
};

const tooComplex = (message: string, node?: FieldNode) =>
  new GraphQLError(message, { nodes: node ? [node] : undefined, extensions: { code: 'QUERY_TOO_COMPLEX' } });

function isIntrospection(node: FieldNode): boolean {
  return node.name.value.startsWith('__');
}

/** Walks each operation once with fragment expansion (cycle-safe), measuring depth, aliases, directives and cost. */
export function queryShapeRule(limits: Pick<GatewayLimits, 'maxDepth' | 'maxAliases' | 'maxDirectives' | 'maxCost'>): ValidationRule {
  return (context: ValidationContext): ASTVisitor => {
    const fragments = new Map<string, FragmentDefinitionNode>();
    for (const def of context.getDocument().definitions) if (def.kind === Kind.FRAGMENT_DEFINITION) fragments.set(def.name.value, def);
    const schema = context.getSchema();
    return {
      OperationDefinition(op) {
        let aliases = 0;
        let directives = op.directives?.length ?? 0;
        let maxDepth = 0;
        let cost = 0;
        let reported = false;
        let visits = 0;
        const report = (msg: string, node?: FieldNode) => {
          if (!reported) context.reportError(tooComplex(msg, node));
          reported = true;
        };
        const rootType =
          op.operation === 'query' ? schema.getQueryType() : op.operation === 'mutation' ? schema.getMutationType() : schema.getSubscriptionType();
        // `intro`: inside an introspection field. Depth and cost are not counted there (the schema query
        // GraphiQL sends is deep), but aliases and directives are: aliased copies of introspection
        // fields through reused fragments are what would make the response grow without bound.
        const walk = (set: SelectionSetNode, parent: GraphQLType | null | undefined, depth: number, factor: number, seen: Set<string>, intro: boolean) => {
          for (const sel of set.selections) {
            if (reported) return;
            if (++visits > 20_000) return report('Query is too complex');
            directives += sel.directives?.length ?? 0;
            if (sel.kind === Kind.FIELD) {
              if (sel.alias) aliases++;
              if (aliases > limits.maxAliases) return report(`Query uses more than ${limits.maxAliases} aliases`, sel);
              if (intro || isIntrospection(sel)) {
                if (sel.selectionSet) walk(sel.selectionSet, undefined, depth, factor, seen, true);
                if (directives > limits.maxDirectives) return report(`Query uses more than ${limits.maxDirectives} directives`);
                continue;
              }
              const named = parent ? getNamedType(parent) : undefined;
              const fieldDef = named && 'getFields' in named ? (named.getFields() as Record<string, { type: GraphQLOutputType }>)[sel.name.value] : undefined;
              const type = fieldDef?.type;
              const d = depth + 1;
              if (d > maxDepth) maxDepth = d;
              const composite = type ? isCompositeType(getNamedType(type)) : !!sel.selectionSet;
              cost += (composite ? 2 : 1) * factor;
              if (maxDepth > limits.maxDepth) return report(`Query depth exceeds the limit of ${limits.maxDepth}`, sel);
              if (cost > limits.maxCost) return report(`Query cost exceeds the limit of ${limits.maxCost}`, sel);
              if (sel.selectionSet) {
                let listy = false;
                let t = type;
                while (t && isNonNullType(t)) t = t.ofType;
                if (t && isListType(t)) listy = true;
                walk(sel.selectionSet, type, d, factor * 1.5 * (listy ? 10 : 1), seen, false);
              }
            } else if (sel.kind === Kind.INLINE_FRAGMENT) {
              const cond = sel.typeCondition ? schema.getType(sel.typeCondition.name.value) : parent;
              walk(sel.selectionSet, intro ? undefined : cond, depth, factor, seen, intro);
            } else {
              const name = sel.name.value;
              const frag = fragments.get(name);
              if (!frag || seen.has(name)) continue; // unknown/cyclic fragments are reported by standard rules
              const next = new Set(seen);
              next.add(name);
              walk(frag.selectionSet, intro ? undefined : schema.getType(frag.typeCondition.name.value), depth, factor, next, intro);
            }
            if (directives > limits.maxDirectives) return report(`Query uses more than ${limits.maxDirectives} directives`);
          }
        };
        walk(op.selectionSet, rootType, 0, 1, new Set(), false);
      },
    };
  };
}
