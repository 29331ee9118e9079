import { type Token, tokenize } from './sql-tokens.js'

/** What a statement's text says about it, for span names and metric attributes. */
export interface QuerySummary {
  /**
   * `db.query.summary`: operations and their tables in the order written
   * (`SELECT items`, `INSERT orders SELECT carts`), at most 255 characters; '' when none is
   * recognised. Never a literal or a parameter.
   */
  readonly summary: string
  /**
   * `db.operation.name`: the operation of a single statement, outside parentheses, as written
   * (`select`, `INSERT`, `CREATE TABLE`); undefined for several statements or none.
   */
  readonly operation: string | undefined
}

/** The conventions' cap, cut between words. */
const MAX_SUMMARY = 255

/** Words that begin a statement (at its start, or right after `(`). */
const STATEMENTS = new Set([
  'ABORT',
  'ALTER',
  'ANALYZE',
  'BEGIN',
  'CALL',
  'CHECKPOINT',
  'CLOSE',
  'CLUSTER',
  'COMMENT',
  'COMMIT',
  'COPY',
  'CREATE',
  'DEALLOCATE',
  'DECLARE',
  'DELETE',
  'DISCARD',
  'DO',
  'DROP',
  'END',
  'EXECUTE',
  'EXPLAIN',
  'FETCH',
  'GRANT',
  'IMPORT',
  'INSERT',
  'LISTEN',
  'LOAD',
  'LOCK',
  'MERGE',
  'MOVE',
  'NOTIFY',
  'PREPARE',
  'REASSIGN',
  'REFRESH',
  'REINDEX',
  'RELEASE',
  'RESET',
  'REVOKE',
  'ROLLBACK',
  'SAVEPOINT',
  'SECURITY',
  'SELECT',
  'SET',
  'SHOW',
  'START',
  'TABLE',
  'TRUNCATE',
  'UNLISTEN',
  'UPDATE',
  'VACUUM',
  'VALUES',
])

/** After these the next word may still begin the statement (`EXPLAIN ANALYZE SELECT`). */
const PREFIXES = new Set(['EXPLAIN', 'ANALYZE', 'VERBOSE'])

/** Words between CREATE/ALTER/DROP and the kind of object. */
const DDL_MODIFIERS = new Set([
  'OR',
  'REPLACE',
  'TEMP',
  'TEMPORARY',
  'UNLOGGED',
  'GLOBAL',
  'LOCAL',
  'UNIQUE',
  'MATERIALIZED',
  'FOREIGN',
  'RECURSIVE',
  'CONSTRAINT',
  'DEFAULT',
  'TRUSTED',
  'PROCEDURAL',
])
const IF_EXISTS = new Set(['IF', 'NOT', 'EXISTS', 'CONCURRENTLY', 'ONLY'])

/** Words that end a table reference (so they are not its alias). */
const CLAUSES = new Set([
  'AS',
  'CROSS',
  'EXCEPT',
  'FETCH',
  'FOR',
  'FULL',
  'GROUP',
  'HAVING',
  'INNER',
  'INTERSECT',
  'JOIN',
  'LEFT',
  'LIMIT',
  'NATURAL',
  'OFFSET',
  'ON',
  'ORDER',
  'RETURNING',
  'RIGHT',
  'SET',
  'TABLESAMPLE',
  'UNION',
  'USING',
  'WHERE',
  'WINDOW',
  'WITH',
  'DO',
  'VALUES',
  'SELECT',
  'DEFAULT',
  'OVERRIDING',
])

const upper = (token: Token | undefined) => (token?.kind === 'word' ? token.text.toUpperCase() : '')
const isName = (token: Token | undefined) => token?.kind === 'word' || token?.kind === 'quoted'
const isPunct = (token: Token | undefined, text: string) => token?.kind === 'punct' && token.text === text

/** Reads the statement's tokens once, left to right, collecting operations and targets. */
class Summarizer {
  readonly parts: string[] = []
  /** The first operation outside parentheses of each statement. */
  readonly topOperations: string[] = []
  readonly #tokens: Token[]
  /** Names of the WITH clause's queries: not tables. */
  readonly #ctes = new Set<string>()
  #depth = 0
  #statementOpen = false
  /** In a COPY statement, whose FROM names its source (STDIN, PROGRAM 'cmd', 'file'), never a table. */
  #copy = false
  /**
   * The depths FROM lists go on at, after the parentheses of their item close (a function call,
   * a subquery: `FROM generate_series(1, 3) g, items`), innermost last.
   */
  readonly #fromResume: number[] = []

  constructor(tokens: Token[]) {
    this.#tokens = tokens
  }

  run(): void {
    const tokens = this.#tokens
    // Whether the next word may begin a statement: at the start, after `;` or `(`, and after
    // a WITH clause's last query.
    let start = true
    // The depth at which a WITH clause lists its queries, while it does; else -1.
    let withDepth = -1
    let i = 0
    while (i < tokens.length) {
      const token = tokens[i] as Token
      const next = tokens[i + 1]
      if (token.kind === 'punct') {
        if (token.text === ';') {
          this.#depth = 0
          this.#statementOpen = false
          this.#copy = false
          this.#fromResume.length = 0
          withDepth = -1
          start = true
        } else if (token.text === '(') {
          this.#depth++
          start = true
        } else if (token.text === ')') {
          this.#depth = Math.max(0, this.#depth - 1)
          start = this.#depth === withDepth && !isPunct(next, ',')
          if (this.#fromResume.at(-1) === this.#depth) {
            this.#fromResume.pop()
            const after = this.#alias(i + 1)
            if (isPunct(tokens[after], '(')) {
              // The alias's column list: the list goes on when it closes (read by this loop, as
              // every parenthesis is: a scan ahead for its end would make the reading quadratic).
              this.#fromResume.push(this.#depth)
              i = after
              continue
            }
            if (isPunct(tokens[after], ',')) {
              i = this.#fromList(after + 1)
              continue
            }
          }
        } else {
          start = false
        }
        i++
        continue
      }
      const word = upper(token)
      if (start && STATEMENTS.has(word)) {
        if (this.#depth === withDepth) withDepth = -1
        i = this.#statement(i, word)
        start = PREFIXES.has(word)
        continue
      }
      if (start && word === 'WITH') {
        withDepth = this.#depth
        start = false
        i += upper(next) === 'RECURSIVE' ? 2 : 1
        continue
      }
      start = false
      if (this.#depth === withDepth && (upper(next) === 'AS' || isPunct(next, '('))) {
        this.#ctes.add(token.text)
        i++
      } else if (word === 'SELECT') {
        this.#operation(token.text)
        i++
      } else if (word === 'FROM' && this.#copy && this.#depth === 0) {
        i += isName(next) ? 2 : 1
      } else if (word === 'FROM') {
        i = this.#fromList(i + 1)
      } else if (word === 'JOIN' || word === 'USING') {
        i = this.#fromItem(i + 1)
      } else if (word === 'INTO') {
        i = this.#target(i + 1)
      } else {
        i++
      }
    }
  }

  #operation(text: string): void {
    this.parts.push(text)
    if (this.#depth === 0 && !this.#statementOpen) {
      this.#statementOpen = true
      this.topOperations.push(text)
    }
  }

  /** A statement keyword at `i`; returns the index after what it consumed. */
  #statement(i: number, word: string): number {
    const tokens = this.#tokens
    const first = tokens[i] as Token
    let j = i + 1
    if (word === 'CREATE' || word === 'ALTER' || word === 'DROP') {
      const words = [first.text]
      while (DDL_MODIFIERS.has(upper(tokens[j]))) words.push((tokens[j++] as Token).text)
      if (tokens[j]?.kind === 'word') words.push((tokens[j++] as Token).text)
      this.#operation(words.join(' '))
      while (IF_EXISTS.has(upper(tokens[j]))) j++
      return isName(tokens[j]) ? this.#target(j) : j
    }
    if (word === 'START' && upper(tokens[j]) === 'TRANSACTION') {
      this.#operation(`${first.text} ${(tokens[j] as Token).text}`)
      return j + 1
    }
    this.#operation(first.text)
    if (word === 'COPY' && this.#depth === 0) this.#copy = true
    if (word === 'UPDATE' || word === 'CALL' || word === 'COPY') {
      if (upper(tokens[j]) === 'ONLY') j++
      return isName(tokens[j]) ? this.#target(j) : j
    }
    if (word === 'TRUNCATE' || word === 'LOCK') {
      if (upper(tokens[j]) === 'TABLE') j++
      if (upper(tokens[j]) === 'ONLY') j++
      j = this.#target(j)
      while (isPunct(tokens[j], ',') && isName(tokens[j + 1])) j = this.#target(j + 1)
      return j
    }
    return j
  }

  /** A possibly qualified name at `i` (`schema.table`, `"a b"`); the index after it. */
  #name(i: number): [string, number] {
    const tokens = this.#tokens
    let text = (tokens[i] as Token).text
    let j = i + 1
    while (isPunct(tokens[j], '.') && isName(tokens[j + 1])) {
      text += `.${(tokens[j + 1] as Token).text}`
      j += 2
    }
    return [text, j]
  }

  #target(i: number): number {
    if (!isName(this.#tokens[i])) return i
    const [name, j] = this.#name(i)
    if (!this.#ctes.has(name)) this.parts.push(name)
    return j
  }

  #fromList(i: number): number {
    const tokens = this.#tokens
    let j = this.#fromItem(i)
    while (isPunct(tokens[j], ',')) {
      if (isPunct(tokens[j + 1], '(')) j++
      else if (isName(tokens[j + 1]) || upper(tokens[j + 1]) === 'ONLY') j = this.#fromItem(j + 1)
      else break
    }
    // An item in parentheses (a function's arguments, a subquery) is read by run(); the list
    // goes on when they close.
    if (isPunct(tokens[j], '(')) this.#fromResume.push(this.#depth)
    return j
  }

  /** Past `[WITH ORDINALITY] [AS] alias` at `i`, when there. */
  #alias(i: number): number {
    const tokens = this.#tokens
    let j = i
    if (upper(tokens[j]) === 'WITH' && upper(tokens[j + 1]) === 'ORDINALITY') j += 2
    if (upper(tokens[j]) === 'AS') j++
    if (isName(tokens[j]) && !CLAUSES.has(upper(tokens[j]))) j++
    return j
  }

  /** One table reference: a target, unless it is a function call or a subquery. */
  #fromItem(i: number): number {
    const tokens = this.#tokens
    let j = i
    while (upper(tokens[j]) === 'ONLY' || upper(tokens[j]) === 'LATERAL') j++
    if (!isName(tokens[j]) || CLAUSES.has(upper(tokens[j]))) return j
    const [name, after] = this.#name(j)
    j = after
    if (isPunct(tokens[j], '(')) return j // a function in FROM, or USING (columns)
    if (!this.#ctes.has(name)) this.parts.push(name)
    // [AS] alias [(columns)]
    if (upper(tokens[j]) === 'AS') j++
    if (isName(tokens[j]) && !CLAUSES.has(upper(tokens[j]))) j++
    return j
  }
}

/** Summarizes one statement text (see QuerySummary). */
export function summarizeQuery(text: string): QuerySummary {
  const summarizer = new Summarizer(tokenize(text))
  summarizer.run()
  let summary = ''
  for (const part of summarizer.parts) {
    const next = summary === '' ? part : `${summary} ${part}`
    if (next.length > MAX_SUMMARY) break
    summary = next
  }
  const operation = summarizer.topOperations.length === 1 ? summarizer.topOperations[0] : undefined
  return { summary, operation }
}

const MAX_CACHED = 1_000

/**
 * Longer texts are summarized each time, never kept: the cache holds its keys, and a thousand
 * bulk statements built with `unsafe()` (each a new text, a megabyte of literals) would keep a
 * gigabyte. Reading one costs what sending it did.
 */
const MAX_CACHED_TEXT = 10_000

/**
 * summarizeQuery with a cache: an app sends the same few hundred statement texts again and
 * again. Past MAX_CACHED distinct texts (an app building SQL by hand) the cache starts over
 * rather than grow. Each summary object stands for one text (callers key per-text data by it).
 */
export class QuerySummaries {
  readonly #cache = new Map<string, QuerySummary>()

  of(text: string): QuerySummary {
    if (text.length > MAX_CACHED_TEXT) return summarizeQuery(text)
    let summary = this.#cache.get(text)
    if (summary === undefined) {
      summary = summarizeQuery(text)
      if (this.#cache.size >= MAX_CACHED) this.#cache.clear()
      this.#cache.set(text, summary)
    }
    return summary
  }
}
