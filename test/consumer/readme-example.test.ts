import { readFileSync } from 'node:fs'
import { describe, expect, test } from 'vitest'

/** The first ```ts block of a markdown file, as the consumer leg extracts it. */
function example(file: string): string | undefined {
  const text = readFileSync(new URL(`../../${file}`, import.meta.url), 'utf8')
  return /^```ts\n([\s\S]*?)^```$/m.exec(text)?.[1]
}

// The consumer leg (.ci/steps/consumer.mjs) runs, type-checks and bundles the root README's
// example from the packed packages; the registry page shows the umbrella README's.
describe('the README example', () => {
  test('the registry page shows the code CI runs', () => {
    const root = example('README.md')
    expect(root).toBeDefined()
    expect(example('packages/fastify-pg-pool/README.md')).toBe(root)
  })

  test('creates its table, types its params, answers 404 and closes on SIGTERM', () => {
    const code = example('README.md') ?? ''
    expect(code).toMatch(/await app\.db`\s*create table if not exists items/)
    expect(code).toMatch(/app\.get<\{ Params: \{ id: number \} \}>\(\s*'\/items\/:id'/)
    expect(code).toContain('reply.code(404)')
    expect(code).toContain("process.once('SIGTERM', () => app.close())")
  })
})
