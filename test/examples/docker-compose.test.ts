import { spawnSync } from 'node:child_process'
import { existsSync, readFileSync } from 'node:fs'
import { createRequire } from 'node:module'
import { dirname, join, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'
import { Ajv } from 'ajv'
import formatsPlugin from 'ajv-formats'
import { describe, expect, test } from 'vitest'
import { parse } from 'yaml'

const root = resolve(dirname(fileURLToPath(import.meta.url)), '../..')
const examples = join(root, 'examples')
// The Compose Specification's JSON schema, as shipped in the dclint package.
const schemaPath = join(
  dirname(createRequire(import.meta.url).resolve('dclint/package.json')),
  'schemas/compose.schema.json',
)

interface Service {
  image?: string
  build?: { context: string; dockerfile: string }
  user?: string
  entrypoint?: string[]
  command?: string[]
  environment?: Record<string, string>
  depends_on?: string[] | Record<string, { condition?: string }>
  volumes?: string[]
  deploy?: { replicas?: number }
  healthcheck?: { test: string[] }
}

/** `-c key=value` settings of a postgres command line. */
function settings(args: readonly string[]): Record<string, string> {
  const found: Record<string, string> = {}
  args.forEach((arg, i) => {
    const [key, value] = (args[i - 1] === '-c' ? arg : '').split('=')
    if (key && value !== undefined) found[key] = value
  })
  return found
}

/** The file on the host that a service mounts at `target` (relative to examples/). */
function mounted(service: Service | undefined, target: string): string {
  const volume = service?.volumes?.find((v) => v.split(':')[1] === target)
  if (!volume) throw new Error(`nothing is mounted at ${target}`)
  return join(examples, volume.split(':')[0] as string)
}

describe('examples/docker-compose.yml', () => {
  const compose = parse(readFileSync(join(examples, 'docker-compose.yml'), 'utf8')) as {
    services: Record<string, Service>
  }

  test('is valid per the Compose Specification schema', () => {
    const ajv = new Ajv({ allErrors: true, strict: false })
    // ajv-formats is CommonJS: under NodeNext its default import is the module object.
    const addFormats = (formatsPlugin as unknown as { default: (ajv: Ajv) => Ajv }).default
    addFormats(ajv)
    // The schema names its meta-schema with https://, which Ajv does not ship under that name.
    const { $schema: _, ...schema } = JSON.parse(readFileSync(schemaPath, 'utf8'))
    const validate = ajv.compile(schema)
    expect(validate(compose), JSON.stringify(validate.errors, null, 2)).toBe(true)
  })

  test('runs PostgreSQL and its standby, PgBouncer in transaction mode, two app replicas and Prometheus', () => {
    const { postgres, 'postgres-replica': replica, pgbouncer, app, prometheus } = compose.services
    expect(postgres?.image).toMatch(/^postgres:/)
    expect(replica?.image).toMatch(/^postgres:/)
    expect(pgbouncer?.environment?.POOL_MODE).toBe('transaction')
    expect(app?.deploy?.replicas).toBe(2)
    expect(app?.environment?.DATABASE_URL).toContain('@pgbouncer:')
    expect(app?.environment?.PGBOUNCER).toBe('true')
    expect(app?.environment?.PG_POOL_INSTANCES).toBe('2')
    expect(app?.healthcheck?.test.join(' ')).toContain('/health/live')
    expect(prometheus?.image).toMatch(/^prom\/prometheus:/)
  })

  test('every dependency is a service and every mounted or built file exists', () => {
    const names = Object.keys(compose.services)
    for (const service of Object.values(compose.services)) {
      const deps = Array.isArray(service.depends_on) ? service.depends_on : Object.keys(service.depends_on ?? {})
      for (const dep of deps) expect(names).toContain(dep)
      for (const volume of service.volumes ?? []) {
        const host = volume.split(':')[0] as string
        if (host.startsWith('.')) expect(existsSync(join(examples, host)), host).toBe(true)
      }
      if (service.build) {
        expect(existsSync(join(examples, service.build.context, service.build.dockerfile))).toBe(true)
      }
    }
  })

  test('a streaming standby: the primary allows replication, the replica clones it and follows it', () => {
    const { postgres: primary, 'postgres-replica': replica } = compose.services
    // A physical standby needs the primary's major version.
    expect(replica?.image).toBe(primary?.image)
    const primarySettings = settings(primary?.command ?? [])
    expect(primarySettings.wal_level).toBe('replica')
    expect(Number(primarySettings.max_wal_senders)).toBeGreaterThan(0)

    // At the primary's first initialisation: a replication role and a pg_hba line for it.
    const init = readFileSync(mounted(primary, '/docker-entrypoint-initdb.d/10-replication.sh'), 'utf8')
    const role = /create role (\w+) with replication login password/.exec(init)?.[1]
    expect(role).toBe('replicator')
    expect(init).toContain(`host replication ${role} all scram-sha-256`)
    expect(init).toContain('$REPLICATION_PASSWORD')

    // The replica: pg_basebackup from the primary as that role (same password), then postgres
    // as a hot standby (standby.signal and primary_conninfo from --write-recovery-conf).
    expect(replica?.user).toBe('postgres')
    const script = replica?.entrypoint?.at(-1) ?? ''
    const entrypoint = readFileSync(mounted(replica, script), 'utf8')
    expect(entrypoint).toMatch(/pg_basebackup --host="\$PRIMARY_HOST"/)
    expect(entrypoint).toContain(`--username=${role}`)
    expect(entrypoint).toContain('--write-recovery-conf')
    expect(entrypoint).toContain('--wal-method=stream')
    expect(replica?.environment?.PRIMARY_HOST).toBe('postgres')
    expect(Number(replica?.environment?.PRIMARY_PORT)).toBe(5432)
    expect(replica?.environment?.PGPASSWORD).toBe(primary?.environment?.REPLICATION_PASSWORD)
    expect(replica?.depends_on).toMatchObject({ postgres: { condition: 'service_healthy' } })
    expect(replica?.healthcheck?.test.join(' ')).toContain('pg_isready')
    // A hot standby refuses to start with fewer connections than its primary.
    const exec = /^exec (postgres .*)$/m.exec(entrypoint)?.[1]?.split(/\s+/) ?? []
    const replicaSettings = settings(exec)
    expect(replicaSettings.hot_standby).toBe('on')
    expect(Number(replicaSettings.max_connections)).toBeGreaterThanOrEqual(Number(primarySettings.max_connections))

    for (const file of [mounted(primary, '/docker-entrypoint-initdb.d/10-replication.sh'), mounted(replica, script)]) {
      const check = spawnSync('sh', ['-n', file], { encoding: 'utf8' })
      expect(check.status, `${file}: ${check.stderr}`).toBe(0)
    }
  })

  test('the app gets the standby in DATABASE_REPLICA_URLS, with the credentials of its primary URL', () => {
    const { app } = compose.services
    const primaryUrl = new URL(app?.environment?.DATABASE_URL ?? '')
    const replicaUrls = (app?.environment?.DATABASE_REPLICA_URLS ?? '').split(',').map((url) => new URL(url.trim()))
    expect(replicaUrls.map((url) => url.hostname)).toEqual(['postgres-replica'])
    for (const url of replicaUrls) {
      const service = compose.services[url.hostname]
      expect(service?.entrypoint?.join(' ')).toContain('replica-entrypoint.sh')
      expect(url.port).toBe('5432')
      expect(url.username).toBe(primaryUrl.username)
      expect(url.password).toBe(primaryUrl.password)
      expect(url.pathname).toBe(primaryUrl.pathname)
    }
    // The app starts once the standby answers.
    expect(app?.depends_on).toMatchObject({ 'postgres-replica': { condition: 'service_healthy' } })
  })

  test('Prometheus scrapes /metrics of every app replica', () => {
    const config = parse(readFileSync(join(examples, 'compose/prometheus.yml'), 'utf8'))
    const job = config.scrape_configs[0]
    expect(job.metrics_path).toBe('/metrics')
    expect(job.dns_sd_configs[0]).toMatchObject({ names: ['app'], port: 3000 })
  })
})
