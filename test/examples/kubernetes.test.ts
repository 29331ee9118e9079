import { readdirSync, readFileSync } from 'node:fs'
import { dirname, join, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'
import pgPoolCore from '@fastify-pg-pool/core'
import pgPoolHealth from '@fastify-pg-pool/health'
import pgPoolMetrics from '@fastify-pg-pool/metrics'
import Fastify from 'fastify'
import { beforeAll, describe, expect, test } from 'vitest'
import { parseAllDocuments } from 'yaml'

const dir = join(resolve(dirname(fileURLToPath(import.meta.url)), '../..'), 'examples/kubernetes')

// Shapes of the few fields checked here, described rather than imported.
interface Probe {
  httpGet?: { path: string; port: string | number }
  tcpSocket?: { port: string | number }
  timeoutSeconds?: number
  periodSeconds?: number
  failureThreshold?: number
}
interface Container {
  name: string
  ports?: { name?: string; containerPort: number }[]
  env?: { name: string; value?: string; valueFrom?: { secretKeyRef?: { name: string; key: string } } }[]
  resources?: { requests?: Record<string, string>; limits?: Record<string, string> }
  startupProbe?: Probe
  livenessProbe?: Probe
  readinessProbe?: Probe
  lifecycle?: { preStop?: { exec?: { command: string[] }; sleep?: { seconds: number } } }
  volumeMounts?: { name: string; mountPath: string; subPath?: string }[]
}
interface Manifest {
  apiVersion: string
  kind: string
  metadata: { name: string; labels?: Record<string, string> }
  spec?: Record<string, unknown>
  data?: Record<string, string>
}
interface Deployment extends Manifest {
  spec: {
    replicas: number
    selector: { matchLabels: Record<string, string> }
    template: {
      metadata: { labels: Record<string, string> }
      spec: {
        terminationGracePeriodSeconds?: number
        containers: Container[]
        volumes?: { name: string; configMap?: { name: string }; secret?: { secretName: string } }[]
      }
    }
  }
}
interface Service extends Manifest {
  spec: { selector: Record<string, string>; ports: { name?: string; port: number; targetPort: string | number }[] }
}

const apiVersions: Record<string, string> = {
  Deployment: 'apps/v1',
  Service: 'v1',
  ConfigMap: 'v1',
  PodDisruptionBudget: 'policy/v1',
  ServiceMonitor: 'monitoring.coreos.com/v1',
}

const files = readdirSync(dir).filter((f) => f.endsWith('.yaml'))
const manifests: (Manifest & { file: string })[] = files.flatMap((file) =>
  parseAllDocuments(readFileSync(join(dir, file), 'utf8')).map((doc) => {
    expect(doc.errors, file).toEqual([])
    return { ...(doc.toJS() as Manifest), file }
  }),
)

function find<T extends Manifest>(kind: string, name: string): T {
  const found = manifests.find((m) => m.kind === kind && m.metadata.name === name)
  if (found === undefined) throw new Error(`no ${kind} ${name}`)
  return found as unknown as T
}

function matches(selector: Record<string, string>, labels: Record<string, string> | undefined): boolean {
  return Object.entries(selector).every(([k, v]) => labels?.[k] === v)
}

/** The container port a Service or probe names (by name or number). */
function containerPort(container: Container, port: string | number): number | undefined {
  const found = container.ports?.find((p) => p.name === port || p.containerPort === port)
  return found?.containerPort
}

const app = find<Deployment>('Deployment', 'fastify-pg-pool-demo')
const appContainer = app.spec.template.spec.containers[0] as Container
const appService = find<Service>('Service', 'fastify-pg-pool-demo')

// What the example app really serves and how long it really takes to close: the plugins
// registered with the example's options (lazy: no database needed to read them).
let routes: string[] = []
let closeTimeoutMs = 0
beforeAll(async () => {
  const fastify = Fastify()
  const seen: string[] = []
  fastify.addHook('onRoute', (route) => {
    seen.push(`${route.method} ${route.url}`)
  })
  await fastify.register(pgPoolCore, {
    connection: 'postgres://app@pgbouncer:5432/app',
    pool: { max: 10, acquireTimeout: 2_000, pgbouncer: true, lazy: true },
  })
  await fastify.register(pgPoolHealth)
  await fastify.register(pgPoolMetrics)
  await fastify.ready()
  routes = seen
  closeTimeoutMs = fastify.pgPool.options.closeTimeout
  await fastify.close()
})

describe('examples/kubernetes', () => {
  test('every file parses, and every document has a known kind, its apiVersion and a name', () => {
    expect(files.sort()).toEqual(['deployment.yaml', 'pgbouncer.yaml', 'service.yaml', 'servicemonitor.yaml'])
    expect(manifests.map((m) => `${m.file}: ${m.kind}/${m.metadata.name}`).sort()).toEqual([
      'deployment.yaml: Deployment/fastify-pg-pool-demo',
      'deployment.yaml: PodDisruptionBudget/fastify-pg-pool-demo',
      'pgbouncer.yaml: ConfigMap/pgbouncer-config',
      'pgbouncer.yaml: Deployment/pgbouncer',
      'pgbouncer.yaml: Service/pgbouncer',
      'service.yaml: Service/fastify-pg-pool-demo',
      'servicemonitor.yaml: ServiceMonitor/fastify-pg-pool-demo',
    ])
    for (const m of manifests) expect(m.apiVersion, `${m.kind} in ${m.file}`).toBe(apiVersions[m.kind])
  })

  test('the probes point at the health routes the plugin registers by default', () => {
    const probes = {
      startup: appContainer.startupProbe,
      liveness: appContainer.livenessProbe,
      readiness: appContainer.readinessProbe,
    }
    expect(probes.liveness?.httpGet?.path).toBe('/health/live')
    expect(probes.readiness?.httpGet?.path).toBe('/health/ready')
    for (const [name, probe] of Object.entries(probes)) {
      expect(routes, name).toContain(`GET ${probe?.httpGet?.path}`)
      expect(containerPort(appContainer, probe?.httpGet?.port ?? ''), name).toBeDefined()
    }
    // The readiness probe outwaits the ping timeout (1000 ms by default): a database that does
    // not answer gives a 503 with a reason, not a probe timeout.
    expect((probes.readiness?.timeoutSeconds ?? 1) * 1000).toBeGreaterThan(1_000)
    // Liveness tolerates a few slow answers before a restart.
    expect(probes.liveness?.failureThreshold ?? 3).toBeGreaterThanOrEqual(3)
  })

  test('terminationGracePeriodSeconds outlasts the preStop sleep plus the pool closeTimeout', () => {
    const command = appContainer.lifecycle?.preStop?.exec?.command ?? []
    expect(command[0]).toBe('sleep')
    const preStopSeconds = Number(command[1])
    expect(preStopSeconds).toBeGreaterThan(0)
    const grace = app.spec.template.spec.terminationGracePeriodSeconds ?? 30
    expect(closeTimeoutMs).toBe(10_000)
    expect(grace).toBeGreaterThan(preStopSeconds + closeTimeoutMs / 1000)
  })

  test('the app reads its database URL from a Secret, goes through PgBouncer, and counts its replicas', () => {
    const env = Object.fromEntries((appContainer.env ?? []).map((e) => [e.name, e]))
    expect(env.DATABASE_URL?.valueFrom?.secretKeyRef).toEqual({ name: 'fastify-pg-pool-demo-db', key: 'url' })
    expect(env.DATABASE_URL?.value).toBeUndefined()
    expect(env.PGBOUNCER?.value).toBe('true')
    expect(Number(env.PG_POOL_INSTANCES?.value)).toBe(app.spec.replicas)
    expect(Number(env.PORT?.value)).toBe(containerPort(appContainer, 'http'))
    expect(appContainer.resources?.requests?.cpu).toBeDefined()
    expect(appContainer.resources?.requests?.memory).toBeDefined()
    expect(appContainer.resources?.limits?.memory).toBeDefined()
  })

  test('selectors and ports line up: Deployment, Service, ServiceMonitor', () => {
    expect(matches(app.spec.selector.matchLabels, app.spec.template.metadata.labels)).toBe(true)
    expect(matches(appService.spec.selector, app.spec.template.metadata.labels)).toBe(true)
    for (const port of appService.spec.ports) {
      expect(containerPort(appContainer, port.targetPort), String(port.targetPort)).toBeDefined()
    }
    const pdb = find<Manifest & { spec: { selector: { matchLabels: Record<string, string> } } }>(
      'PodDisruptionBudget',
      'fastify-pg-pool-demo',
    )
    expect(matches(pdb.spec.selector.matchLabels, app.spec.template.metadata.labels)).toBe(true)

    const monitor = find<
      Manifest & {
        spec: { selector: { matchLabels: Record<string, string> }; endpoints: { port: string; path: string }[] }
      }
    >('ServiceMonitor', 'fastify-pg-pool-demo')
    expect(matches(monitor.spec.selector.matchLabels, appService.metadata.labels)).toBe(true)
    const servicePorts = appService.spec.ports.map((p) => p.name)
    for (const endpoint of monitor.spec.endpoints) {
      expect(servicePorts).toContain(endpoint.port)
      expect(routes).toContain(`GET ${endpoint.path}`)
    }
  })

  test('PgBouncer runs in transaction mode on the port its Service and the app URL use', () => {
    const config = find<Manifest>('ConfigMap', 'pgbouncer-config').data?.['pgbouncer.ini'] ?? ''
    const ini = Object.fromEntries(
      [...config.matchAll(/^\s*([a-z_]+)\s*=\s*(.*?)\s*$/gm)].map((m) => [m[1] as string, m[2] as string]),
    )
    expect(ini.pool_mode).toBe('transaction')
    const deployment = find<Deployment>('Deployment', 'pgbouncer')
    const container = deployment.spec.template.spec.containers[0] as Container
    expect(containerPort(container, 'postgres')).toBe(Number(ini.listen_port))
    const service = find<Service>('Service', 'pgbouncer')
    expect(matches(service.spec.selector, deployment.spec.template.metadata.labels)).toBe(true)
    for (const port of service.spec.ports) expect(containerPort(container, port.targetPort)).toBeDefined()
    // The mounted config is the ConfigMap's; the auth file is mounted where the config says.
    const volumes = deployment.spec.template.spec.volumes ?? []
    expect(volumes.find((v) => v.configMap?.name === 'pgbouncer-config')).toBeDefined()
    const mounts = (container.volumeMounts ?? []).map((m) => m.mountPath)
    expect(mounts).toContain('/etc/pgbouncer/pgbouncer.ini')
    expect(mounts).toContain(ini.auth_file)
    // Each PgBouncer pod caps its server connections, whatever the app's replica count.
    expect(Number(ini.max_db_connections)).toBeGreaterThan(0)
    expect(Number(ini.default_pool_size)).toBeLessThanOrEqual(Number(ini.max_db_connections))
  })
})
