import { defineConfig } from 'vitest/config'

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts', 'packages/*/test/**/*.test.ts'],
    // Needs a pgbouncer binary: run by the PgBouncer leg (vitest.pgbouncer.config.ts). Packs and
    // installs from the registry for minutes: the consumer-settings leg (vitest.consumer.config.ts).
    // The seeded chaos storm: `npm run test:chaos` (vitest.chaos.config.ts).
    exclude: ['test/pgbouncer/**', 'test/consumer-settings/**', 'test/chaos/**', '**/node_modules/**'],
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
