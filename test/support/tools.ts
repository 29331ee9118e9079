import { existsSync } from 'node:fs'

/**
 * A binary from Debian's `prometheus` package (`promtool`, `prometheus`), or undefined.
 *
 * The README's `npm test` must pass on a machine with only Node and npm, so there the tests
 * that need these binaries are skipped, with a warning naming what is missing and why. `.ci/run`
 * installs the package and then sets REQUIRE_PROMETHEUS_TOOLS=1: in CI a missing binary fails the
 * test file instead of skipping it.
 */
export function prometheusTool(name: 'promtool' | 'prometheus', skipped: string): string | undefined {
  const path = `/usr/bin/${name}`
  if (existsSync(path)) return path
  const problem = `${path} is missing (apt-get install prometheus)`
  if (process.env.REQUIRE_PROMETHEUS_TOOLS === '1') throw new Error(`${problem}; REQUIRE_PROMETHEUS_TOOLS=1 needs it`)
  console.warn(`SKIPPED ${skipped}: ${problem}`)
  return undefined
}
