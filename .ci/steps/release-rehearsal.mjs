#!/usr/bin/env node
// Release rehearsal (docs/releasing.md): in a throwaway clone of HEAD, add a changeset, run
// `changeset version`, pack every package with pnpm, and print each package with its version,
// its dependencies as published, the files in its tarball and its changelog entry. Nothing is
// published. Every command in the clone runs with npm_config_registry pointed at a local port
// nothing listens on and pnpm --offline: a command that reached for the registry would fail.
import { execFileSync } from 'node:child_process'
import { mkdtempSync, readFileSync, realpathSync, rmSync, writeFileSync } from 'node:fs'
import { createServer } from 'node:net'
import { tmpdir } from 'node:os'
import { dirname, join, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'
import { publishablePackages } from './workspace-packages.mjs'

const PNPM = 'pnpm@10.34.8'
const REQUIRED_FILES = ['package.json', 'LICENSE', 'README.md', 'CHANGELOG.md', 'dist/index.js', 'dist/index.d.ts']

const repo = resolve(dirname(fileURLToPath(import.meta.url)), '../..')
const work = mkdtempSync(join(tmpdir(), 'fastify-pg-pool-release-'))
const problems = []
let packages = []

function run(cmd, args, options = {}) {
  return execFileSync(cmd, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'], ...options })
}

/** A loopback port that nothing listens on once this returns. */
function closedPort() {
  return new Promise((done, fail) => {
    const server = createServer().once('error', fail)
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address()
      server.close(() => done(port))
    })
  })
}

/** The top section of a changelog: from the first `## ` heading to the next. */
function firstEntry(changelog) {
  const start = changelog.indexOf('\n## ')
  if (start < 0) return ''
  const next = changelog.indexOf('\n## ', start + 1)
  return changelog.slice(start + 1, next < 0 ? undefined : next).trim()
}

function cleanUp() {
  rmSync(work, { recursive: true, force: true })
}
for (const signal of ['SIGINT', 'SIGTERM']) {
  process.once(signal, () => {
    cleanUp()
    process.exit(1)
  })
}

try {
  // The workspace's own install fills pnpm's store, from which the clone installs offline;
  // pnpm's CLI is located here too, since npx asks the registry even for a cached version.
  run('npx', ['-y', PNPM, 'install', '--frozen-lockfile'], { cwd: repo, stdio: 'inherit' })
  const pnpmCli = realpathSync(run('npx', ['-y', '-p', PNPM, '-c', 'command -v pnpm'], { cwd: repo }).trim())

  const registry = `http://127.0.0.1:${await closedPort()}/`
  const env = {
    ...process.env,
    npm_config_registry: registry,
    npm_config_fetch_retries: '0',
    npm_config_offline: 'true',
  }
  const clone = join(work, 'repo')
  const packs = join(work, 'packs')
  run('git', ['clone', '--quiet', '--no-hardlinks', repo, clone])
  const commit = run('git', ['rev-parse', '--short', 'HEAD'], { cwd: clone }).trim()
  // Dependents after what they depend on, as pnpm publish -r orders them.
  packages = publishablePackages(clone).map(({ dir }) => dir)
  console.log(`release rehearsal of ${commit} in ${clone}`)
  console.log(`registry for every command below: ${registry} (nothing listens there), pnpm --offline\n`)

  const pnpm = (args, cwd) => run(process.execPath, [pnpmCli, ...args], { cwd, env })
  pnpm(['install', '--frozen-lockfile', '--offline', '--reporter=silent'], clone)

  const before = Object.fromEntries(
    packages.map((dir) => [
      dir,
      JSON.parse(readFileSync(join(clone, 'packages', dir, 'package.json'), 'utf8')).version,
    ]),
  )
  writeFileSync(
    join(clone, '.changeset', 'release-rehearsal.md'),
    [
      '---',
      '"fastify-pg-pool": minor',
      '"@fastify-pg-pool/core": patch',
      '---',
      '',
      'Release rehearsal: this entry lives only in a throwaway clone.',
      '',
    ].join('\n'),
  )
  console.log('$ changeset version')
  console.log(run(join(clone, 'node_modules/.bin/changeset'), ['version'], { cwd: clone, env }).trim())

  for (const dir of packages) {
    const out = pnpm(['pack', '--json', '--pack-destination', packs], join(clone, 'packages', dir))
    // --json prints the prepack script's output first; the report is the last JSON object.
    const report = JSON.parse(out.slice(out.lastIndexOf('\n{') + 1))
    const tarball = report.filename
    const files = run('tar', ['-tzf', tarball])
      .split('\n')
      .filter(Boolean)
      .map((f) => f.replace(/^package\//, ''))
      .sort()
    const manifest = JSON.parse(run('tar', ['-xzOf', tarball, 'package/package.json']))
    const changelog = files.includes('CHANGELOG.md') ? run('tar', ['-xzOf', tarball, 'package/CHANGELOG.md']) : ''

    console.log(`\n=== ${manifest.name}@${manifest.version} (was ${before[dir]}): ${tarball.split('/').pop()}`)
    const deps = Object.entries(manifest.dependencies ?? {}).map(([name, range]) => `${name} ${range}`)
    console.log(`dependencies: ${deps.join(', ')}`)
    console.log(
      `peerDependencies: ${Object.entries(manifest.peerDependencies ?? {})
        .map((d) => d.join(' '))
        .join(', ')}`,
    )
    console.log(`files (${files.length}):`)
    for (const f of files) console.log(`  ${f}`)
    console.log('changelog entry:')
    console.log(
      firstEntry(changelog)
        .split('\n')
        .map((line) => `  ${line}`)
        .join('\n'),
    )

    for (const f of REQUIRED_FILES)
      if (!files.includes(f)) problems.push(`${manifest.name}: ${f} is not in the tarball`)
    if (files.some((f) => f.endsWith('.tsbuildinfo') || f.startsWith('test/'))) {
      problems.push(`${manifest.name}: the tarball holds build state or tests`)
    }
    for (const [name, range] of Object.entries({ ...manifest.dependencies, ...manifest.peerDependencies })) {
      if (String(range).startsWith('workspace:')) problems.push(`${manifest.name}: ${name} is still ${range}`)
    }
    if (manifest.version === before[dir]) problems.push(`${manifest.name}: changeset version left it at ${before[dir]}`)
    if (!firstEntry(changelog).startsWith(`## ${manifest.version}`)) {
      problems.push(`${manifest.name}: CHANGELOG.md has no entry for ${manifest.version}`)
    }
    if (manifest.scripts?.prepack) problems.push(`${manifest.name}: the published manifest keeps the prepack script`)
  }
  const versions = new Set(
    packages.map((dir) => JSON.parse(readFileSync(join(clone, 'packages', dir, 'package.json'))).version),
  )
  if (versions.size !== 1) problems.push(`the packages do not share one version: ${[...versions].join(', ')}`)
} catch (error) {
  problems.push(`${error.message}${error.stderr ? `\n${error.stderr}` : ''}${error.stdout ? `\n${error.stdout}` : ''}`)
} finally {
  cleanUp()
}

// .ci/run adds the rehearsal to its closing count (.ci/summary.cjs reads vitest's JSON fields).
if (process.env.REPORT_JSON) {
  const ok = problems.length === 0
  writeFileSync(
    process.env.REPORT_JSON,
    JSON.stringify({ numPassedTests: ok ? 1 : 0, numFailedTests: ok ? 0 : 1, numPendingTests: 0, numTodoTests: 0 }),
  )
}
if (problems.length) {
  console.log('\nrelease rehearsal FAILED:')
  for (const p of problems) console.log(`- ${p}`)
  process.exit(1)
}
console.log(`\nrelease rehearsal ok: ${packages.length} packages versioned and packed without the registry`)
