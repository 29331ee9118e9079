import { readFileSync } from 'node:fs'
import { createRequire } from 'node:module'

/** The workspace's postgres.js version (its package.json is not in its `exports`: found from its entry). */
function workspaceVersion(): string {
  const entry = createRequire(import.meta.url).resolve('postgres')
  const root = entry.slice(0, entry.lastIndexOf('/node_modules/postgres/') + '/node_modules/postgres/'.length)
  return (JSON.parse(readFileSync(`${root}package.json`, 'utf8')) as { version: string }).version
}

/**
 * The postgres.js the tests run on: the versions leg (.ci/steps/postgres-versions.mjs) names the
 * one it resolves `postgres` to; otherwise the workspace's (pnpm-lock.yaml).
 */
export const postgresVersion: string = process.env.POSTGRES_JS_VERSION ?? workspaceVersion()

/**
 * A statement postgres.js cannot build while another runs on its connection: 3.4.9 fails the
 * connection's active query instead and keeps the unbuilt one queued (the adapter gives the
 * failure back and retires the connection: assumption 8); 3.4.10 and later fail the statement
 * alone, and the connection goes on.
 */
export const unbuiltStatementRetiresConnection = postgresVersion === '3.4.9'
