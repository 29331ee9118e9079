import { defineConfig } from 'vitest/config'
import base from './vitest.config.js'

/**
 * The PgBouncer leg (PGBOUNCER=1, run by .ci/run): the tests whose subject survives a
 * transaction-mode pooler, through a real PgBouncer. Tests about server-side connection
 * identity (idle timeout, lifetime, backend pids, session reset) do not belong here: behind
 * PgBouncer the server's connections are PgBouncer's.
 */
export default defineConfig({
  ...base,
  test: {
    ...base.test,
    include: [
      'test/core/transactions.test.ts',
      'test/core/refusals.test.ts',
      'test/core/query-api.test.ts',
      'test/core/aborts.test.ts',
      'test/regressions/read-only-session.test.ts',
      'test/health/**/*.test.ts',
      'test/pgbouncer/**/*.test.ts',
    ],
    exclude: ['**/node_modules/**'],
    typecheck: { enabled: false },
  },
})
