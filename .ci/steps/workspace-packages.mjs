// The packages `pnpm publish -r` would publish: every non-private packages/*/package.json, each
// after the workspace packages it depends on (the order pnpm packs and publishes them in).
import { existsSync, readdirSync, readFileSync } from 'node:fs'
import { join } from 'node:path'

/** [{ dir, name, version }] in dependency order. */
export function publishablePackages(repo) {
  const all = readdirSync(join(repo, 'packages'))
    .filter((dir) => existsSync(join(repo, 'packages', dir, 'package.json')))
    .map((dir) => ({ dir, manifest: JSON.parse(readFileSync(join(repo, 'packages', dir, 'package.json'), 'utf8')) }))
    .filter(({ manifest }) => !manifest.private)
  const names = new Set(all.map(({ manifest }) => manifest.name))
  const ordered = []
  const placed = new Set()
  while (ordered.length < all.length) {
    const next = all.find(
      ({ manifest }) =>
        !placed.has(manifest.name) &&
        Object.keys({ ...manifest.dependencies, ...manifest.peerDependencies })
          .filter((dep) => names.has(dep))
          .every((dep) => placed.has(dep)),
    )
    if (!next) throw new Error('the workspace packages depend on each other in a cycle')
    placed.add(next.manifest.name)
    ordered.push({ dir: next.dir, name: next.manifest.name, version: next.manifest.version })
  }
  return ordered
}
