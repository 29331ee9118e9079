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
  environment?: Record<string, string>
  depends_on?: string[] | Record<string, unknown>
  volumes?: string[]
  deploy?: { replicas?: number }
  healthcheck?: { test: string[] }
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

  test('runs PostgreSQL, PgBouncer in transaction mode, two app replicas and Prometheus', () => {
    const { postgres, pgbouncer, app, prometheus } = compose.services
    expect(postgres?.image).toMatch(/^postgres:/)
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

  test('Prometheus scrapes /metrics of every app replica', () => {
    const config = parse(readFileSync(join(examples, 'compose/prometheus.yml'), 'utf8'))
    const job = config.scrape_configs[0]
    expect(job.metrics_path).toBe('/metrics')
    expect(job.dns_sd_configs[0]).toMatchObject({ names: ['app'], port: 3000 })
  })
})
