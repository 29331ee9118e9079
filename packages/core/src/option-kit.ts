import { errors } from './errors.js'
import { redactUrls } from './redact.js'
import type { PgPoolCoreOptions } from './types.js'

/**
 * The suite's options toolkit: every package validates its options once, at `register`, with
 * these pieces, so that every bad option reads the same way:
 * `Invalid option <full.path>: <problem>` (FST_PG_POOL_INVALID_OPTION).
 */

/** Keys Fastify's `register` leaves in a plugin's options object: never typos. */
export const fastifyRegisterKeys: readonly string[] = Object.freeze(['prefix', 'logLevel', 'logSerializers'])

// A Record over keyof PgPoolCoreOptions: adding a core option without listing it here fails the build.
const coreKeys: Record<keyof PgPoolCoreOptions, true> = {
  name: true,
  connection: true,
  pool: true,
  onLease: true,
  onConnect: true,
  errorMapping: true,
  replicas: true,
  replica: true,
  leaseApplicationName: true,
}

/** The core's top-level option keys (the umbrella checks its own keys and these together). */
export const coreOptionKeys = Object.freeze(Object.keys(coreKeys)) as readonly (keyof PgPoolCoreOptions)[]

/** Top-level names users bring from postgres.js, node-postgres, @fastify/postgres and poolers. */
export const coreOptionAliases: Readonly<Record<string, string>> = Object.freeze({
  connectionString: 'connection',
  connectionUrl: 'connection',
  databaseUrl: 'connection',
  url: 'connection',
  uri: 'connection',
  host: 'connection',
  hostname: 'connection',
  port: 'connection',
  user: 'connection',
  username: 'connection',
  password: 'connection',
  database: 'connection',
  ssl: 'connection',
  max: 'pool.max',
  poolSize: 'pool.max',
  maxConnections: 'pool.max',
  connectionLimit: 'pool.max',
  acquireTimeout: 'pool.acquireTimeout',
  maxWaiting: 'pool.maxWaiting',
  idleTimeout: 'pool.idleTimeout',
  idleTimeoutMillis: 'pool.idleTimeout',
  maxLifetime: 'pool.maxLifetime',
  maxLifetimeSeconds: 'pool.maxLifetime',
  connectTimeout: 'pool.connectTimeout',
  connectionTimeoutMillis: 'pool.connectTimeout',
  statementTimeout: 'pool.statementTimeout',
  queryTimeout: 'pool.statementTimeout',
  applicationName: 'pool.applicationName',
})

/** The same names (pg's, postgres.js's) given inside `pool`, and what they are called there. */
export const poolOptionAliases: Readonly<Record<string, string>> = Object.freeze({
  poolSize: 'max',
  maxConnections: 'max',
  connectionLimit: 'max',
  idleTimeoutMillis: 'idleTimeout',
  maxLifetimeSeconds: 'maxLifetime',
  connectionTimeoutMillis: 'connectTimeout',
  queryTimeout: 'statementTimeout',
})

interface Refusal {
  readonly name: string
  readonly problem: string
  /** An option suggested by its path from the options' root (`pool.applicationName`). */
  readonly suggestion?: string | undefined
}

/** Each invalid-option error's option name and problem, for readAt to name it again. */
const refusals = new WeakMap<Error, Refusal>()

/** FST_PG_POOL_INVALID_OPTION: `Invalid option <name>: <problem>`. */
export function invalidOption(name: string, problem: string, suggestion?: string): Error {
  const error = new errors.FST_PG_POOL_INVALID_OPTION(name, problem)
  refusals.set(error, { name, problem, suggestion })
  return error
}

function didYouMean(suggestion: string): string {
  return `unknown option; did you mean ${suggestion}?`
}

/** FST_PG_POOL_INVALID_OPTION for `key`, not one of `known`, named `name`, with the closest valid key. */
export function unknownKey(name: string, key: string, known: readonly string[]): Error {
  const suggestion = closestName(key, known)
  return invalidOption(name, suggestion === undefined ? 'unknown option' : didYouMean(suggestion))
}

/**
 * Runs `read`, a reader that names its options from a scope of its own (`connection.port`,
 * `pool.max`), on options given somewhere else: an option it refuses is named where it was
 * given (`at(name)`, say `replicas[0].pool.max`). Other errors pass as they are.
 */
export function readAt<T>(at: (name: string) => string, read: () => T): T {
  try {
    return read()
  } catch (error) {
    const refusal = error instanceof Error ? refusals.get(error) : undefined
    if (refusal === undefined) throw error
    // A suggested path is the reader's too: `pool.applicationName` is `replicas[0].pool.applicationName` here.
    const { suggestion } = refusal
    if (suggestion === undefined) throw invalidOption(at(refusal.name), refusal.problem)
    throw invalidOption(at(refusal.name), didYouMean(at(suggestion)), at(suggestion))
  }
}

const MAX_SHOWN_ITEMS = 8
const MAX_SHOWN_CHARS = 120

/**
 * A value as an error message shows it: strings quoted, with the password of any URL in them
 * replaced by `***`; objects and functions by their kind only (an object may hold a password).
 */
export function describe(value: unknown): string {
  if (typeof value === 'string') {
    // Not quoted when it reads like a connection string (a URL, libpq's `key=value` form, a
    // password's name however encoded): no redaction can know every spelling of its secret.
    if (/:\/\/|=|%|pass/i.test(value)) return 'a string (not shown: it may hold a password)'
    const shown = JSON.stringify(redactUrls(value))
    return shown.length > MAX_SHOWN_CHARS ? `${shown.slice(0, MAX_SHOWN_CHARS)}…"` : shown
  }
  if (typeof value === 'bigint') return `${value}n`
  if (Array.isArray(value)) {
    const items = value.slice(0, MAX_SHOWN_ITEMS).map(describe)
    if (value.length > MAX_SHOWN_ITEMS) items.push('…')
    return `[${items.join(', ')}]`
  }
  if (typeof value === 'function') return 'a function'
  if (value !== null && typeof value === 'object') return 'an object'
  return String(value)
}

/** `scope.key`, or `key` at the top level. */
export function optionPath(scope: string, key: string): string {
  return scope === '' ? key : `${scope}.${key}`
}

// Case, `_` and `-` are not typos: `onlease`, `Pool`, `idle_timeout` match their camelCase names.
const normalize = (name: string) => name.toLowerCase().replace(/[-_\s]/g, '')

const words = (name: string) =>
  name
    .replace(/([a-z0-9])([A-Z])/g, '$1 $2')
    .toLowerCase()
    .split(/[\s_-]+/)
    .filter(Boolean)
    .sort()
    .join(' ')

/** Edit distance counting a swap of two neighbours as one edit (optimal string alignment). */
export function editDistance(a: string, b: string): number {
  const rows: number[][] = []
  for (let i = 0; i <= a.length; i++) {
    const row = [i]
    for (let j = 1; j <= b.length; j++) {
      if (i === 0) {
        row.push(j)
        continue
      }
      const previous = rows[i - 1] as number[]
      const cost = a[i - 1] === b[j - 1] ? 0 : 1
      let best = Math.min((previous[j] as number) + 1, (row[j - 1] as number) + 1, (previous[j - 1] as number) + cost)
      if (i > 1 && j > 1 && a[i - 1] === b[j - 2] && a[i - 2] === b[j - 1]) {
        best = Math.min(best, ((rows[i - 2] as number[])[j - 2] as number) + 1)
      }
      row.push(best)
    }
    rows.push(row)
  }
  return (rows[a.length] as number[])[b.length] as number
}

/**
 * The valid name a user most likely meant by `key`, or undefined when none is close: the same
 * name in another case or spelling (`onlease`, `idle_timeout`), an alias from `aliases`
 * (`connectionString` → `connection`), the same words in another order (`retryAfterMax` →
 * `maxRetryAfter`), or a typo of at most one edit in three characters (`helth` → `health`).
 */
export function closestName(
  key: string,
  known: readonly string[],
  aliases: Readonly<Record<string, string>> = {},
): string | undefined {
  const wanted = normalize(key)
  const same = known.find((name) => normalize(name) === wanted)
  if (same !== undefined) return same
  for (const [alias, target] of Object.entries(aliases)) if (normalize(alias) === wanted) return target
  const reordered = known.find((name) => words(name) === words(key))
  if (reordered !== undefined) return reordered
  let best: string | undefined
  let bestDistance = Number.POSITIVE_INFINITY
  for (const name of known) {
    const distance = editDistance(wanted, normalize(name))
    if (distance < bestDistance) {
      best = name
      bestDistance = distance
    }
  }
  // Farther than that, a suggestion is a guess, not a correction.
  return bestDistance <= Math.floor((wanted.length + 1) / 3) ? best : undefined
}

export interface CheckKeysOptions {
  /** Keys accepted without being used here (Fastify's register options at a plugin's top level). */
  readonly ignore?: readonly string[]
  /** Names from other libraries and what they are called here (a key or a path). */
  readonly aliases?: Readonly<Record<string, string>>
}

/** Throws FST_PG_POOL_INVALID_OPTION on the first key of `given` not in `known`, with the closest valid name. */
export function checkKeys(
  scope: string,
  given: object,
  known: readonly string[],
  options: CheckKeysOptions = {},
): void {
  for (const key of Object.keys(given)) {
    if (known.includes(key) || options.ignore?.includes(key)) continue
    const suggestion = closestName(key, known, options.aliases)
    if (suggestion === undefined) {
      throw invalidOption(optionPath(scope, key), `unknown option; expected one of ${known.join(', ')}`)
    }
    // An alias may name a path from the root (`pool.applicationName`), which readAt names again.
    throw invalidOption(
      optionPath(scope, key),
      didYouMean(suggestion),
      suggestion.includes('.') ? suggestion : undefined,
    )
  }
}

/** `raw` as a plain object (`{}` when undefined); anything else throws naming `name`. */
export function asObject(name: string, raw: unknown): Record<string, unknown> {
  if (raw === undefined) return {}
  if (raw === null || typeof raw !== 'object' || Array.isArray(raw)) {
    throw invalidOption(name, `expected an object, got ${describe(raw)}`)
  }
  return raw as Record<string, unknown>
}

/** A part that can be switched off: `false`, or its options object (`{}` when undefined). */
export function asFeature(name: string, raw: unknown): Record<string, unknown> | false {
  if (raw === false) return false
  if (raw !== undefined && (raw === null || typeof raw !== 'object' || Array.isArray(raw))) {
    throw invalidOption(name, `expected an object or false, got ${describe(raw)}`)
  }
  return asObject(name, raw)
}

/** How one option is read: `undefined` gives its default; a bad value throws naming the option. */
export interface OptionSpec<T> {
  read(value: unknown, name: string): T
}

export type OptionTable = Readonly<Record<string, OptionSpec<unknown>>>

export type ResolvedTable<T extends OptionTable> = {
  readonly [K in keyof T]: T[K] extends OptionSpec<infer V> ? V : never
}

export interface ResolveOptions extends CheckKeysOptions {
  /** Keys valid here that the caller reads itself, outside the table (special rules). */
  readonly extra?: readonly string[]
}

/**
 * Reads `raw` (an object, or undefined for all defaults) through `table`: refuses unknown
 * keys, reads each option with its spec, named `scope.key`, and freezes the result.
 */
export function resolveTable<T extends OptionTable>(
  scope: string,
  raw: unknown,
  table: T,
  options: ResolveOptions = {},
): ResolvedTable<T> {
  const given = asObject(scope, raw)
  checkKeys(scope, given, [...Object.keys(table), ...(options.extra ?? [])], options)
  const out: Record<string, unknown> = {}
  for (const [key, spec] of Object.entries(table)) out[key] = spec.read(given[key], optionPath(scope, key))
  return Object.freeze(out) as ResolvedTable<T>
}

function expected(name: string, rule: string, value: unknown): Error {
  return invalidOption(name, `expected ${rule}, got ${describe(value)}`)
}

function range(kind: string, min: number | undefined, max: number | undefined, above: number | undefined): string {
  if (above !== undefined) return max === undefined ? `${kind} > ${above}` : `${kind} > ${above} and <= ${max}`
  if (min !== undefined && max !== undefined) return `${kind} from ${min} to ${max}`
  if (min !== undefined) return `${kind} >= ${min}`
  return max === undefined ? kind : `${kind} <= ${max}`
}

export interface NumberRule<D> {
  readonly default: D
  readonly min?: number
  readonly max?: number
  /** Exclusive lower bound. */
  readonly above?: number
  /** Also accept a decimal string (URL query parameters, environment variables). */
  readonly strings?: boolean
}

function numeric<D extends number | undefined>(
  kind: 'a number' | 'an integer',
  rule: NumberRule<D>,
): OptionSpec<number | D> {
  const text = range(kind, rule.min, rule.max, rule.above)
  return {
    read(raw, name) {
      if (raw === undefined) return rule.default
      const value = rule.strings && typeof raw === 'string' && raw.trim() !== '' ? Number(raw) : raw
      if (
        typeof value !== 'number' ||
        !Number.isFinite(value) ||
        (kind === 'an integer' && !Number.isInteger(value)) ||
        (rule.min !== undefined && value < rule.min) ||
        (rule.max !== undefined && value > rule.max) ||
        (rule.above !== undefined && value <= rule.above)
      ) {
        throw expected(name, text, raw)
      }
      return value
    },
  }
}

/** A finite integer within the rule's bounds. */
export function integer<D extends number | undefined>(rule: NumberRule<D>): OptionSpec<number | D> {
  return numeric('an integer', rule)
}

/** A finite number within the rule's bounds. */
export function number<D extends number | undefined>(rule: NumberRule<D>): OptionSpec<number | D> {
  return numeric('a number', rule)
}

/**
 * The longest delay a Node.js timer keeps: past it, `setTimeout` runs after 1 ms
 * (TimeoutOverflowWarning). PostgreSQL's millisecond settings (`statement_timeout`) stop there too.
 */
export const MAX_DURATION_MS = 2_147_483_647

/**
 * The most a `Retry-After` (whole seconds) may say: a day. Past it a number stops printing as
 * digits (1e21 gives "1e+21", not delay-seconds), and no overload is worth a longer wait.
 */
export const MAX_RETRY_AFTER_SECONDS = 86_400

export interface DurationRule<D> {
  readonly default: D
  /** Default 0. */
  readonly min?: number
}

/** Milliseconds: an integer from the rule's `min` to MAX_DURATION_MS. Every duration option is one. */
export function duration<D extends number | undefined>(rule: DurationRule<D>): OptionSpec<number | D> {
  return integer({ min: rule.min ?? 0, max: MAX_DURATION_MS, default: rule.default })
}

/** `true` or `false`. */
export function boolean<D extends boolean | undefined>(fallback: D): OptionSpec<boolean | D> {
  return {
    read(raw, name) {
      if (raw === undefined) return fallback
      if (typeof raw !== 'boolean') throw expected(name, 'a boolean', raw)
      return raw
    },
  }
}

/** One of a few strings. */
export function oneOf<const V extends readonly string[], D extends V[number] | undefined>(
  values: V,
  fallback: D,
): OptionSpec<V[number] | D> {
  const quoted = values.map((value) => `'${value}'`)
  const text = quoted.length > 1 ? `${quoted.slice(0, -1).join(', ')} or ${quoted.at(-1)}` : (quoted[0] ?? '')
  return {
    read(raw, name) {
      if (raw === undefined) return fallback
      if (!values.includes(raw as string)) throw expected(name, text, raw)
      return raw as V[number]
    },
  }
}

/** A non-empty string. */
export function text<D extends string | undefined>(fallback: D): OptionSpec<string | D> {
  return {
    read(raw, name) {
      if (raw === undefined) return fallback
      if (typeof raw !== 'string' || raw === '') throw expected(name, 'a non-empty string', raw)
      return raw
    },
  }
}

/** RFC 9110's token (tchar+): what an HTTP header's name and RFC 6265's cookie-name are made of. */
const HTTP_TOKEN = /^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/

/**
 * An HTTP header name, lowercased: Node lowercases the names of incoming headers, and refuses to
 * send one that is not a token (ERR_INVALID_HTTP_TOKEN, thrown while the reply is being sent).
 */
export function headerName<D extends string | undefined>(fallback: D): OptionSpec<string | D> {
  return {
    read(raw, name) {
      if (raw === undefined) return fallback
      if (typeof raw !== 'string' || !HTTP_TOKEN.test(raw)) {
        throw expected(name, "an HTTP header name (letters, digits and !#$%&'*+-.^_`|~)", raw)
      }
      const lower = raw.toLowerCase()
      if (httpOwnedHeaders.has(lower) || lower.startsWith('proxy-') || lower.startsWith('sec-')) {
        throw expected(name, 'a header of its own (HTTP, the server or the browser owns this one)', raw)
      }
      return lower
    },
  }
}

/**
 * Headers whose meaning HTTP, the server or the browser owns: a token written there breaks the
 * response (`transfer-encoding` with a length), replaces what it says (`content-type`), or is
 * dropped or rewritten on the way (hop-by-hop headers, `content-length`).
 */
const httpOwnedHeaders: ReadonlySet<string> = new Set([
  'connection',
  'keep-alive',
  'transfer-encoding',
  'te',
  'trailer',
  'upgrade',
  'content-length',
  'content-type',
  'content-encoding',
  'content-range',
  'content-location',
  'host',
  'cookie',
  'set-cookie',
  'authorization',
  'www-authenticate',
  'location',
  'date',
  'expect',
  'vary',
  'etag',
  'last-modified',
  'cache-control',
  'retry-after',
])

/** A cookie name (RFC 6265: a token), case kept: cookie names are case-sensitive. */
export function cookieName<D extends string | undefined>(fallback: D): OptionSpec<string | D> {
  return {
    read(raw, name) {
      if (raw === undefined) return fallback
      if (typeof raw !== 'string' || !HTTP_TOKEN.test(raw)) {
        throw expected(name, "a cookie name (letters, digits and !#$%&'*+-.^_`|~)", raw)
      }
      return raw
    },
  }
}

/** A route path (`/...`), or `false` for no route. */
export function routePath(fallback: string | false): OptionSpec<string | false> {
  return {
    read(raw, name) {
      if (raw === undefined) return fallback
      if (raw !== false && (typeof raw !== 'string' || !raw.startsWith('/') || !isLiteralPath(raw, ROUTE_SYNTAX))) {
        throw expected(name, 'a path starting with / or false', raw)
      }
      return raw
    },
  }
}

// Never part of a request's path as Fastify matches it (a query, a fragment, blanks, an empty
// segment, a percent-encoded byte: Fastify decodes the request's path before matching it, so
// '/sant%C3%A9' is looked up as '/santé'): a route or exemption written with one is never reached.
const NEVER_IN_PATH = /[?#\s\p{Cc}]|\/\/|%[0-9A-Fa-f]{2}/u
// Fastify's route syntax (parameters, wildcards, regular expressions): a plugin's fixed route
// given one would answer every path it matches.
const ROUTE_SYNTAX = /[:*()]/

/**
 * Whether `path` can be matched as the literal path it is written as: no query, fragment, blank,
 * control character or empty segment, and (with `syntax`) none of Fastify's route syntax.
 */
export function isLiteralPath(path: string, syntax?: RegExp): boolean {
  return !NEVER_IN_PATH.test(path) && (syntax === undefined || !syntax.test(path))
}

/**
 * Fastify's `prefix` register option, for plugins that declare routes: fastify-plugin skips
 * Fastify's own prefixing, so the plugin prepends it. `''` when absent; never a trailing `/`.
 */
export const routePrefix: OptionSpec<string> = {
  read(raw, name) {
    if (raw === undefined || raw === '') return ''
    if (typeof raw !== 'string' || !raw.startsWith('/')) throw expected(name, 'a route prefix starting with /', raw)
    const prefix = raw.replace(/\/+$/, '')
    if (!isLiteralPath(prefix, ROUTE_SYNTAX)) throw expected(name, 'a route prefix starting with /', raw)
    return prefix
  },
}

/** `prefix` + `path` as Fastify joins them (`/internal` + `/health` → `/internal/health`). */
export function prefixed(prefix: string, path: string | false): string | false {
  return path === false ? false : `${prefix}${path}`
}

/** A nested object of options read through its own table; absent, every default. */
export function nested<T extends OptionTable>(table: T, options: ResolveOptions = {}): OptionSpec<ResolvedTable<T>> {
  return { read: (raw, name) => resolveTable(name, raw, table, options) }
}

/** A part that can be switched off: `false`, or a nested object read through `table`. */
export function feature<T extends OptionTable>(
  table: T,
  options: ResolveOptions = {},
): OptionSpec<ResolvedTable<T> | false> {
  return {
    read(raw, name) {
      const given = asFeature(name, raw)
      return given === false ? false : resolveTable(name, given, table, options)
    },
  }
}
