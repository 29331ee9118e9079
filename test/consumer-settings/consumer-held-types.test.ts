import { execFileSync } from 'node:child_process'
import { readFileSync } from 'node:fs'
import { describe, expect, test } from 'vitest'
import { firstBlock, fixtureDir, project, tarballs, tsc, writeFiles } from './consumer-kit.js'

// Attacks that held: what a stranger compiles against, beyond the consumer leg's one setting
// (`tsc --strict --module nodenext`). The tarballs are packed with pnpm and installed with npm
// outside the workspace (consumer-kit.ts).

const strict = ['--strict', '--target', 'es2022', '--lib', 'es2023', '--types', 'node']
const nodenext = ['--module', 'nodenext', '--moduleResolution', 'nodenext']
const readme = () => firstBlock('README.md', 'ts')

/** The same fixture as consumer-types.test.ts: every marked line must be an error. */
const errorsFixture = `
import { errors, type PgPoolErrorCode } from 'fastify-pg-pool'
import { errors as coreErrors } from '@fastify-pg-pool/core'

const closed = new errors.FST_PG_POOL_CLOSED()
export const code: 'FST_PG_POOL_CLOSED' = closed.code
export const status: 503 = closed.statusCode
// @ts-expect-error the code is its literal, not any string
export const wrongCode: 'NOPE' = closed.code
// @ts-expect-error the status is its literal
export const wrongStatus: 500 = new coreErrors.FST_PG_POOL_ACQUIRE_TIMEOUT().statusCode
// @ts-expect-error no such error
export const missing = errors.FST_PG_POOL_NO_SUCH_CODE
// @ts-expect-error PgPoolErrorCode is the codes, not any string
export const anyCode: PgPoolErrorCode = 'NOT_A_CODE'
`

describe('held: the README example and the errors type-check in a stranger project', () => {
  test.each([
    ['nodenext', [...nodenext]],
    ['node16', ['--module', 'node16', '--moduleResolution', 'node16']],
    ['bundler (esnext)', ['--module', 'esnext', '--moduleResolution', 'bundler']],
    ['bundler (preserve)', ['--module', 'preserve', '--moduleResolution', 'bundler']],
    ['exactOptionalPropertyTypes', [...nodenext, '--exactOptionalPropertyTypes']],
    ['verbatimModuleSyntax', [...nodenext, '--verbatimModuleSyntax']],
    ['noUncheckedIndexedAccess', [...nodenext, '--noUncheckedIndexedAccess']],
  ])(
    'README example, %s (skipLibCheck)',
    async (name, args) => {
      const dir = await project('types', { deps: ['fastify@^5.12.8', 'typescript@~5.9.3', '@types/node@^20.19.43'] })
      const fixture = fixtureDir(dir, `readme-${name.replace(/\W+/g, '-')}`)
      writeFiles(fixture, { 'server.ts': readme() })
      const result = await tsc(dir, fixture, [...strict, ...args, '--skipLibCheck'], ['server.ts'])
      expect(result.errors).toEqual([])
    },
    600_000,
  )

  test('nodenext without skipLibCheck: no error in any shipped declaration', async () => {
    const dir = await project('types', { deps: ['fastify@^5.12.8', 'typescript@~5.9.3', '@types/node@^20.19.43'] })
    const fixture = fixtureDir(dir, 'readme-libcheck')
    writeFiles(fixture, { 'server.ts': readme(), 'errors.ts': errorsFixture })
    const result = await tsc(
      dir,
      fixture,
      [...strict, ...nodenext, '--skipLibCheck', 'false'],
      ['server.ts', 'errors.ts'],
    )
    expect(result.errors.filter((line) => /node_modules\/(@fastify-pg-pool\/|fastify-pg-pool\/)/.test(line))).toEqual(
      [],
    )
  }, 600_000)

  test('nodenext: the errors keep their literal codes and statuses (the fixture the bundler test fails)', async () => {
    const dir = await project('types', { deps: ['fastify@^5.12.8', 'typescript@~5.9.3', '@types/node@^20.19.43'] })
    const fixture = fixtureDir(dir, 'errors-nodenext')
    writeFiles(fixture, { 'errors.ts': errorsFixture })
    const result = await tsc(dir, fixture, [...strict, ...nodenext, '--skipLibCheck'], ['errors.ts'])
    expect(result.errors).toEqual([])
  }, 600_000)

  test('a CommonJS file under node16 gets an error that says why (ESM only, use import())', async () => {
    const dir = await project('types', { deps: ['fastify@^5.12.8', 'typescript@~5.9.3', '@types/node@^20.19.43'] })
    const fixture = fixtureDir(dir, 'cjs-node16')
    writeFiles(fixture, {
      'package.json': '{ "type": "commonjs" }\n',
      'server.ts': "import pgPool = require('fastify-pg-pool')\nexport = pgPool\n",
    })
    const result = await tsc(
      dir,
      fixture,
      [...strict, '--module', 'node16', '--moduleResolution', 'node16'],
      ['server.ts'],
    )
    expect(result.errors.join('\n')).toMatch(/TS1471: Module 'fastify-pg-pool' cannot be imported using this construct/)
    // nodenext (TypeScript >= 5.8) allows require() of ESM, as Node >= 20.19 does.
    const next = await tsc(dir, fixture, [...strict, ...nodenext], ['server.ts'])
    expect(next.errors).toEqual([])
  }, 600_000)

  // The lowest TypeScript that still type-checks Fastify 5's own declarations, one in the middle,
  // and the registry's newest (7.x, the native compiler, at the time of writing).
  test.each([['5.0'], ['5.4'], ['latest']])(
    'README example with typescript@%s (nodenext)',
    async (version) => {
      const dir = await project('types', { deps: ['fastify@^5.12.8', 'typescript@~5.9.3', '@types/node@^20.19.43'] })
      const compiler = await project(`typescript-${version}`, { deps: [`typescript@${version}`] })
      const fixture = fixtureDir(dir, `readme-ts-${version}`)
      writeFiles(fixture, { 'server.ts': readme(), 'errors.ts': errorsFixture })
      const result = await tsc(
        dir,
        fixture,
        [...strict, ...nodenext, '--skipLibCheck'],
        ['server.ts', 'errors.ts'],
        compiler,
      )
      expect(result.errors).toEqual([])
    },
    600_000,
  )
})

describe('held: what the tarballs hold', () => {
  test('every declaration map and source map points at a file in the same tarball; no workspace: range', async () => {
    const files = await tarballs()
    for (const file of files) {
      const listing = execFileSync('tar', ['tzf', file], { encoding: 'utf8' }).trim().split('\n')
      const entries = new Set(listing)
      const manifest = JSON.parse(
        execFileSync('tar', ['xzf', file, '-O', 'package/package.json'], { encoding: 'utf8' }),
      )
      expect(JSON.stringify(manifest), file).not.toContain('workspace:')
      for (const required of [
        'package/README.md',
        'package/LICENSE',
        'package/dist/index.js',
        'package/dist/index.d.ts',
      ]) {
        expect(entries.has(required), `${file}: ${required}`).toBe(true)
      }
      expect(
        listing.filter((entry) => /\.test\.|\/test\//.test(entry)),
        file,
      ).toEqual([])
      for (const map of listing.filter((entry) => entry.endsWith('.map'))) {
        const parsed = JSON.parse(execFileSync('tar', ['xzf', file, '-O', map], { encoding: 'utf8' })) as {
          sources: string[]
          sourceRoot?: string
        }
        for (const source of parsed.sources) {
          const target = new URL(source, `file:///${map}`).pathname.slice(1)
          expect(entries.has(target), `${file}: ${map} -> ${source}`).toBe(true)
        }
      }
    }
  }, 600_000)

  test('the tarballs depend on each other at the version packed, and declare node >= 20.19', async () => {
    const files = await tarballs()
    const versions = new Map<string, string>()
    const manifests = files.map(
      (file) =>
        JSON.parse(execFileSync('tar', ['xzf', file, '-O', 'package/package.json'], { encoding: 'utf8' })) as {
          name: string
          version: string
          engines?: { node?: string }
          dependencies?: Record<string, string>
        },
    )
    for (const manifest of manifests) versions.set(manifest.name, manifest.version)
    for (const manifest of manifests) {
      expect(manifest.engines?.node, manifest.name).toBe('>=20.19')
      for (const [dep, range] of Object.entries(manifest.dependencies ?? {})) {
        if (versions.has(dep)) expect(range, `${manifest.name} -> ${dep}`).toBe(versions.get(dep))
      }
    }
    expect(readFileSync(files[0] as string).length).toBeGreaterThan(0)
  }, 600_000)
})
