/** One lexical token of a PostgreSQL statement, as far as a query summary needs it. */
export interface Token {
  /** `word`: a keyword or plain identifier; `quoted`: a "quoted identifier"; `punct`: ( ) , ; . */
  readonly kind: 'word' | 'quoted' | 'punct'
  /** The token as written (a quoted identifier keeps its quotes). */
  readonly text: string
}

const isSpace = (c: number) => c === 32 || (c >= 9 && c <= 13)
const isDigit = (c: number) => c >= 48 && c <= 57
// Letters, `_`, and every non-ASCII character (PostgreSQL accepts those in identifiers).
const isWordStart = (c: number) => (c >= 65 && c <= 90) || (c >= 97 && c <= 122) || c === 95 || c >= 128
const isWordPart = (c: number) => isWordStart(c) || isDigit(c) || c === 36

/**
 * Splits SQL into words, quoted identifiers and the punctuation that gives them structure.
 * Literals (strings, dollar-quoted bodies, numbers), parameters (`$1`), comments and operators
 * are dropped: a summary never carries a value, and they carry no operation or table name.
 */
export function tokenize(sql: string): Token[] {
  const tokens: Token[] = []
  const n = sql.length
  let i = 0
  while (i < n) {
    const c = sql.charCodeAt(i)
    if (isSpace(c)) {
      i++
    } else if (c === 45 && sql.charCodeAt(i + 1) === 45) {
      // -- comment
      const end = sql.indexOf('\n', i)
      i = end === -1 ? n : end + 1
    } else if (c === 47 && sql.charCodeAt(i + 1) === 42) {
      i = skipBlockComment(sql, i)
    } else if (c === 39) {
      // 'string': E'...' strings take backslash escapes (the E is dropped as a word below).
      const escapes = (sql[i - 1] === 'E' || sql[i - 1] === 'e') && !isWordPart(sql.charCodeAt(i - 2))
      i = skipQuoted(sql, i, 39, escapes)
    } else if (c === 34) {
      const end = skipQuoted(sql, i, 34, false)
      tokens.push({ kind: 'quoted', text: sql.slice(i, end) })
      i = end
    } else if (c === 36) {
      i = skipDollar(sql, i)
    } else if (isWordStart(c)) {
      let end = i + 1
      while (end < n && isWordPart(sql.charCodeAt(end))) end++
      // A string prefix (E'', B'', X'', U&'') is part of its literal, not a word.
      const next = sql.charCodeAt(end)
      if (!(next === 39 && end - i === 1) && !(next === 38 && sql.charCodeAt(end + 1) === 39)) {
        tokens.push({ kind: 'word', text: sql.slice(i, end) })
      }
      i = end
    } else if (isDigit(c)) {
      i++
      while (i < n && (isWordPart(sql.charCodeAt(i)) || sql.charCodeAt(i) === 46)) i++
    } else if (c === 40 || c === 41 || c === 44 || c === 59 || c === 46) {
      tokens.push({ kind: 'punct', text: sql[i] as string })
      i++
    } else {
      i++
    }
  }
  return tokens
}

/** Nested block comments, as PostgreSQL has them. */
function skipBlockComment(sql: string, start: number): number {
  let depth = 0
  let i = start
  while (i < sql.length) {
    if (sql.startsWith('/*', i)) {
      depth++
      i += 2
    } else if (sql.startsWith('*/', i)) {
      depth--
      i += 2
      if (depth === 0) return i
    } else {
      i++
    }
  }
  return sql.length
}

/** Past the closing quote; a doubled quote is part of the text. */
function skipQuoted(sql: string, start: number, quote: number, backslashEscapes: boolean): number {
  let i = start + 1
  while (i < sql.length) {
    const c = sql.charCodeAt(i)
    if (backslashEscapes && c === 92) {
      i += 2
    } else if (c === quote) {
      if (sql.charCodeAt(i + 1) === quote) i += 2
      else return i + 1
    } else {
      i++
    }
  }
  return sql.length
}

/** `$1` (a parameter) or a `$tag$ ... $tag$` body; past either. */
function skipDollar(sql: string, start: number): number {
  let i = start + 1
  if (isDigit(sql.charCodeAt(i))) {
    while (isDigit(sql.charCodeAt(i))) i++
    return i
  }
  while (i < sql.length && isWordPart(sql.charCodeAt(i)) && sql.charCodeAt(i) !== 36) i++
  if (sql.charCodeAt(i) !== 36) return i
  const tag = sql.slice(start, i + 1)
  const end = sql.indexOf(tag, i + 1)
  return end === -1 ? sql.length : end + tag.length
}
