import { expect, test } from 'vitest'
import { outcome } from './host-forms-kit.js'

// Docs (core README "Connection"): "The password never appears in a log line, an error body ...";
// "A value that is not a postgres:// URL, or that cannot be parsed, is not quoted in the error".
// A password with an unencoded ',' and '/' (`app:s3cr3tpw,x/y@host`): the host-list reader in
// resolveConnection (options.ts ~548-563) takes `app:s3cr3tpw,x` (cut at '/') for a host list and
// quotes its first entry: `a host list entry is not host[:port] ...: "app:s3cr3tpw"`.
test('a URL whose password holds , and / is refused without quoting the password', async () => {
  const r = await outcome('postgres://app:s3cr3tpw,x/y@127.0.0.1:5432/db')
  expect(r).toHaveProperty('refused')
  expect((r as { refused: string }).refused).toMatch(/^FST_PG_POOL_INVALID_OPTION/)
  expect((r as { refused: string }).refused).not.toContain('s3cr3t')
})
