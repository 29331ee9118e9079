import { defineConfig } from 'vitest/config'
import { onPath } from './test/support/tools.js'

/**
 * Test files of the main suite that start a PgBouncer of their own (Debian's `pgbouncer`). The
 * README's `npm test` must pass with only Node and npm: without the binary they are left out, with
 * a warning. `.ci/run` installs the package first and sets REQUIRE_PGBOUNCER=1: a missing binary
 * then fails the run instead.
 */
const needPgBouncer = [
  'test/regressions/round-thirteen/on-connect-role-crosses-apps.test.ts',
  'test/regressions/round-thirteen/deadline-write-commits-after-503.test.ts',
  'test/regressions/round-thirteen/pgbouncer-reset-query-always.test.ts',
  'test/regressions/round-thirteen/session-mode-held.test.ts',
  'test/regressions/round-thirteen/readiness-fails-on-pgbouncer-limits.test.ts',
  'test/regressions/round-thirteen/bouncer-admin-events-held.test.ts',
  'test/regressions/round-thirteen/forgot-pgbouncer-flag-leaks.test.ts',
  'test/regressions/round-fourteen/third-api/pgbouncer-08p01-retires-server-08p01-keeps-held.test.ts',
  'test/regressions/round-sixteen/probe-bouncer/tracked-parameters-cross-requests.test.ts',
  'test/regressions/round-sixteen/probe-bouncer/failover-behind-pgbouncer-host-list.test.ts',
  'test/regressions/round-sixteen/second-pool/replayed-parameter-close-reason.test.ts',
  'test/regressions/round-sixteen/second-pool/replayed-parameters-no-churn-held.test.ts',
]
const withoutPgBouncer = onPath('pgbouncer') === undefined
if (withoutPgBouncer) {
  const problem = 'pgbouncer is not on the PATH (apt-get install pgbouncer)'
  if (process.env.REQUIRE_PGBOUNCER === '1') throw new Error(`${problem}; REQUIRE_PGBOUNCER=1 needs it`)
  console.warn(`SKIPPED ${needPgBouncer.length} test files that start a PgBouncer: ${problem}`)
}

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts', 'packages/*/test/**/*.test.ts'],
    // Needs a pgbouncer binary: run by the PgBouncer leg (vitest.pgbouncer.config.ts). Packs and
    // installs from the registry for minutes: the consumer-settings leg (vitest.consumer.config.ts).
    // The seeded chaos storm: `npm run test:chaos` (vitest.chaos.config.ts).
    exclude: [
      'test/pgbouncer/**',
      'test/consumer-settings/**',
      'test/chaos/**',
      '**/node_modules/**',
      ...(withoutPgBouncer ? needPgBouncer : []),
    ],
    globalSetup: ['test/support/global-setup.ts'],
    pool: 'forks',
    // CI asks for a JSON report too, to print one closing count line.
    reporters: process.env.VITEST_JSON ? ['default', 'json'] : ['default'],
    outputFile: process.env.VITEST_JSON ? { json: process.env.VITEST_JSON } : {},
    // Two cores: two files at a time, each with its own database.
    maxWorkers: 2,
    testTimeout: 30_000,
    hookTimeout: 60_000,
    typecheck: {
      enabled: true,
      tsconfig: 'test/tsconfig.json',
      include: ['test/**/*.test-d.ts', 'packages/*/test/**/*.test-d.ts'],
    },
  },
})
