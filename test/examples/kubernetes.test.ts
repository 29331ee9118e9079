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
  image?: string
  command?: string[]
  args?: string[]
  ports?: { name?: string; containerPort: number }[]
  env?: {
    name: string
    value?: string
    valueFrom?: { secretKeyRef?: { name: string; key: string; optional?: boolean } }
  }[]
  resources?: { requests?: Record<string, string>; limits?: Record<string, string> }
  startupProbe?: Probe
  livenessProbe?: Probe
  readinessProbe?: Probe & { exec?: { command: string[] } }
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
  spec: {
    clusterIP?: string
    selector: Record<string, string>
    ports: { name?: string; port: number; targetPort: string | number }[]
  }
}
interface StatefulSet extends Manifest {
  spec: {
    serviceName: string
    replicas: number
    selector: { matchLabels: Record<string, string> }
    template: {
      metadata: { labels: Record<string, string> }
      spec: {
        securityContext?: { runAsNonRoot?: boolean; runAsUser?: number; fsGroup?: number }
        initContainers?: Container[]
        containers: Container[]
      }
    }
    volumeClaimTemplates: { metadata: { name: string } }[]
  }
}

const apiVersions: Record<string, string> = {
  Deployment: 'apps/v1',
  Service: 'v1',
  ConfigMap: 'v1',
  StatefulSet: 'apps/v1',
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
    expect(files.sort()).toEqual([
      'deployment.yaml',
      'pgbouncer.yaml',
      'postgres-replica.yaml',
      'service.yaml',
      'servicemonitor.yaml',
    ])
    expect(manifests.map((m) => `${m.file}: ${m.kind}/${m.metadata.name}`).sort()).toEqual([
      'deployment.yaml: Deployment/fastify-pg-pool-demo',
      'deployment.yaml: PodDisruptionBudget/fastify-pg-pool-demo',
      'pgbouncer.yaml: ConfigMap/pgbouncer-config',
      'pgbouncer.yaml: Deployment/pgbouncer',
      'pgbouncer.yaml: Service/pgbouncer',
      'postgres-replica.yaml: Service/postgres-read',
      'postgres-replica.yaml: Service/postgres-replica',
      'postgres-replica.yaml: StatefulSet/postgres-replica',
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

  test('read replicas: standbys cloned from the primary PgBouncer uses, behind the read Service', () => {
    const replicas = find<StatefulSet>('StatefulSet', 'postgres-replica')
    const pod = replicas.spec.template
    expect(replicas.spec.replicas).toBeGreaterThanOrEqual(1)
    expect(matches(replicas.spec.selector.matchLabels, pod.metadata.labels)).toBe(true)
    const headless = find<Service>('Service', replicas.spec.serviceName)
    expect(headless.spec.clusterIP).toBe('None')
    expect(matches(headless.spec.selector, pod.metadata.labels)).toBe(true)
    expect(pod.spec.securityContext?.runAsNonRoot).toBe(true)

    // The init container copies the primary with pg_basebackup as the replication role, and
    // writes standby.signal + primary_conninfo; the server then runs as a hot standby.
    const clone = pod.spec.initContainers?.[0] as Container
    const server = pod.spec.containers[0] as Container
    expect(clone.image).toBe(server.image)
    const script = [...(clone.command ?? []), ...(clone.args ?? [])].join(' ')
    expect(script).toMatch(/pg_basebackup --host="\$PRIMARY_HOST"/)
    for (const flag of ['--username=replicator', '--wal-method=stream', '--write-recovery-conf']) {
      expect(script).toContain(flag)
    }
    const cloneEnv = Object.fromEntries((clone.env ?? []).map((e) => [e.name, e]))
    const serverEnv = Object.fromEntries((server.env ?? []).map((e) => [e.name, e]))
    expect(cloneEnv.PGPASSWORD?.valueFrom?.secretKeyRef).toEqual({ name: 'postgres-replication', key: 'password' })
    expect(serverEnv.PGPASSWORD?.valueFrom?.secretKeyRef).toEqual(cloneEnv.PGPASSWORD?.valueFrom?.secretKeyRef)
    // The same primary as PgBouncer's [databases] line.
    const ini = find<Manifest>('ConfigMap', 'pgbouncer-config').data?.['pgbouncer.ini'] ?? ''
    const upstream = /^app = host=(\S+) port=(\d+)/m.exec(ini)
    expect(cloneEnv.PRIMARY_HOST?.value).toBe(upstream?.[1])
    expect(cloneEnv.PRIMARY_PORT?.value).toBe(upstream?.[2])
    // Both containers see one data directory, on the claimed volume.
    expect(serverEnv.PGDATA?.value).toBe(cloneEnv.PGDATA?.value)
    const claim = replicas.spec.volumeClaimTemplates[0]?.metadata.name
    for (const container of [clone, server]) {
      const mount = container.volumeMounts?.find((m) => m.name === claim)
      expect(mount, container.name).toBeDefined()
      expect(cloneEnv.PGDATA?.value?.startsWith(`${mount?.mountPath}/`)).toBe(true)
    }
    const command = server.command ?? []
    expect(command[0]).toBe('postgres')
    expect(command).toContain('hot_standby=on')
    expect(server.readinessProbe?.exec?.command[0]).toBe('pg_isready')

    // The read Service selects exactly these pods, on their PostgreSQL port.
    const read = find<Service>('Service', 'postgres-read')
    expect(read.spec.clusterIP).toBeUndefined()
    expect(matches(read.spec.selector, pod.metadata.labels)).toBe(true)
    for (const port of read.spec.ports) expect(containerPort(server, port.targetPort)).toBe(5432)
  })

  test("the app reads its replica URLs from the Secret, and the README puts each standby's stable pod name there", () => {
    const env = Object.fromEntries((appContainer.env ?? []).map((e) => [e.name, e]))
    expect(env.DATABASE_REPLICA_URLS?.value).toBeUndefined()
    expect(env.DATABASE_REPLICA_URLS?.valueFrom?.secretKeyRef).toEqual({
      name: env.DATABASE_URL?.valueFrom?.secretKeyRef?.name,
      key: 'replica-urls',
      optional: true,
    })
    const readme = readFileSync(join(dir, 'README.md'), 'utf8')
    const literal = /--from-literal=replica-urls='([^']+)'/.exec(readme)?.[1] ?? ''
    const urls = literal.split(',').map((url) => new URL(url))
    // One URL per standby (a Service in front of both would hide which one a read lands on):
    // <statefulset>-<ordinal>.<headless service>, on the headless Service's port.
    const headless = find<Service>('Service', 'postgres-replica')
    expect(urls.map((url) => url.hostname)).toEqual(
      [0, 1].map((ordinal) => `postgres-replica-${ordinal}.${headless.metadata.name}`),
    )
    for (const url of urls) expect(Number(url.port)).toBe(headless.spec.ports[0]?.port)
    // Same role and database as the primary URL.
    const primary = new URL(/--from-literal=url='([^']+)'/.exec(readme)?.[1] ?? '')
    for (const url of urls) {
      expect(url.username).toBe(primary.username)
      expect(url.pathname).toBe(primary.pathname)
    }
  })
})
