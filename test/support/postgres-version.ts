import { createRequire } from 'node:module'

/**
 * The postgres.js the tests run on: the versions leg (.ci/steps/postgres-versions.mjs) names the
 * one it resolves `postgres` to; otherwise the workspace's (pnpm-lock.yaml).
 */
export const postgresVersion: string =
  process.env.POSTGRES_JS_VERSION ??
  (createRequire(import.meta.url)('postgres/package.json') as { version: string }).version

/**
 * A statement postgres.js cannot build while another runs on its connection: 3.4.9 fails the
 * connection's active query instead and keeps the unbuilt one queued (the adapter gives the
 * failure back and retires the connection: assumption 8); 3.4.10 and later fail the statement
 * alone, and the connection goes on.
 */
export const unbuiltStatementRetiresConnection = postgresVersion === '3.4.9'
