import { accessSync, constants, statSync } from 'node:fs'
import { delimiter, join } from 'node:path'

/** The first executable `name` in a directory of PATH, as a shell finds it. */
export function onPath(name: string): string | undefined {
  for (const dir of (process.env.PATH ?? '').split(delimiter)) {
    if (!dir) continue
    const candidate = join(dir, name)
    try {
      accessSync(candidate, constants.X_OK)
      if (statSync(candidate).isFile()) return candidate
    } catch {}
  }
  return undefined
}

/**
 * A binary from Debian's `prometheus` package (`promtool`, `prometheus`), or another install of
 * them, looked up on PATH; undefined when there is none.
 *
 * The README's `npm test` must pass on a machine with only Node and npm, so there the tests
 * that need these binaries are skipped, with a warning naming what is missing and why. `.ci/run`
 * installs the package and then sets REQUIRE_PROMETHEUS_TOOLS=1: in CI a missing binary fails the
 * test file instead of skipping it.
 */
export function prometheusTool(name: 'promtool' | 'prometheus', skipped: string): string | undefined {
  const path = onPath(name)
  if (path) return path
  const problem = `${name} is not on the PATH (apt-get install prometheus, or put a Prometheus release's ${name} on the PATH)`
  if (process.env.REQUIRE_PROMETHEUS_TOOLS === '1') throw new Error(`${problem}; REQUIRE_PROMETHEUS_TOOLS=1 needs it`)
  console.warn(`SKIPPED ${skipped}: ${problem}`)
  return undefined
}
