import { defineConfig } from 'vitest/config'
import base from './vitest.config.js'

/**
 * The consumer-settings leg (run by .ci/run, not by `npm test`: it packs every package and installs
 * projects from the registry, minutes and a cache of its own): the packages as a stranger installs
 * them, type-checked under settings the consumer leg does not try (bundler and node10 resolution,
 * exactOptionalPropertyTypes, skipLibCheck off, TypeScript 5.0 to the newest), pnpm's strict
 * node_modules, the lowest Fastify, a bundle with the otel part, each package README's example.
 */
export default defineConfig({
  ...base,
  test: {
    ...base.test,
    include: ['test/consumer-settings/**/*.test.ts'],
    exclude: ['**/node_modules/**'],
    typecheck: { enabled: false },
    testTimeout: 300_000,
  },
})
