import { optionKit, withoutDatabase } from '@fastify-pg-pool/core'
import type { FastifyContextConfig, FastifyInstance, FastifyPluginAsync, FastifyReply, RouteOptions } from 'fastify'
import fp from 'fastify-plugin'
import { type HealthResponse, liveness, readiness } from './health-report.js'
import { type PgPoolHealthOptions, resolveHealthOptions } from './options.js'
import { PoolProbes } from './pool-probes.js'

const HEALTH_CONTENT_TYPE = 'application/health+json; charset=utf-8'

// Probes must never be refused: a route free of database plumbing (the core's marker) is left
// alone by the pool and by admission control; @fastify/under-pressure lets through a route whose
// pressureHandler returns nothing (when an app registers it on its own).
const probeConfig = withoutDatabase({ pressureHandler: () => undefined }) as FastifyContextConfig

function send(reply: FastifyReply, body: HealthResponse): FastifyReply {
  return reply
    .code(body.status === 'fail' ? 503 : 200)
    .header('content-type', HEALTH_CONTENT_TYPE)
    .header('cache-control', 'no-store')
    .send(JSON.stringify(body))
}

const health: FastifyPluginAsync<PgPoolHealthOptions> = async (app: FastifyInstance, opts) => {
  const options = resolveHealthOptions(opts)
  // Every pool of every instance, those registered later (a named instance) included.
  const probes = new PoolProbes(app.pgPools, options)
  let draining = false
  /** The app started (onReady): only then is there anything to drain. */
  let started = false
  // Probes awaiting their ping: at preClose they answer at once ('shutting down' is known)
  // instead of holding app.close() open for up to pingTimeout.
  const awaitingPing = new Set<() => void>()
  const readPools = async () => {
    if (draining) return probes.read(false)
    let stop!: () => void
    const drain = new Promise<void>((resolve) => {
      stop = resolve
    })
    awaitingPing.add(stop)
    try {
      return await Promise.race([probes.read(true), drain.then(() => probes.read(false))])
    } finally {
      awaitingPing.delete(stop)
    }
  }
  let lastStatus: HealthResponse['status'] | undefined

  const ready = async (): Promise<HealthResponse> => {
    const pools = await readPools()
    // Checked again after the pings: close may have begun while they ran.
    const body = readiness({ pools, draining }, { ...options, details: 'full' })
    if (body.status !== lastStatus) {
      // Once per change, not per probe; the output holds codes and counts only.
      const level = body.status === 'pass' || draining ? 'info' : 'warn'
      app.log[level]({ health: body.status, output: body.output }, `readiness is ${body.status}`)
      lastStatus = body.status
    }
    return options.details === 'public' ? { status: body.status } : body
  }

  const routes: RouteOptions[] = []
  const common = {
    method: 'GET',
    exposeHeadRoute: true,
    config: probeConfig,
    ...(options.logLevel === undefined ? {} : { logLevel: options.logLevel }),
  } as const
  if (options.livePath !== false) {
    routes.push({ ...common, url: options.livePath, handler: (_request, reply) => send(reply, liveness(options)) })
  }
  for (const url of [options.readyPath, options.healthPath]) {
    if (url === false) continue
    routes.push({ ...common, url, handler: async (_request, reply) => send(reply, await ready()) })
  }
  for (const route of routes) app.route(route)

  app.addHook('onClose', async () => probes.close())

  // Every instance is registered by now: a name there that none has (a typo) would leave
  // readiness passing while the database it meant is down.
  app.addHook('onReady', async () => {
    const known = app.pgPools
      .all()
      .flatMap((view) => (view.instance === undefined ? [] : [view.instance]))
      .filter((name, i, names) => names.indexOf(name) === i)
    // The pools' close clocks start at preClose, with the drain: one as long would close them
    // mid-drain, refusing every request still routed to the app.
    for (const view of app.pgPools.all()) {
      if (options.drainDelay > 0 && options.drainDelay >= view.options.closeTimeout) {
        throw optionKit.invalidOption(
          'health.drainDelay',
          `${options.drainDelay} ms is not below the closeTimeout of pool ${optionKit.describe(view.name)} (${view.options.closeTimeout} ms), which starts with the drain: raise pool.closeTimeout above drainDelay plus the longest request`,
        )
      }
    }
    for (const name of options.requireInstances) {
      if (app.pgPools.get(name) !== undefined) continue
      const meant = optionKit.closestName(name, known)
      throw optionKit.invalidOption(
        'health.requireInstances',
        `no instance is named ${optionKit.describe(name)}${meant === undefined ? '' : `; did you mean ${optionKit.describe(meant)}?`} (registered: ${known.length === 0 ? 'none with a name' : known.map((known) => optionKit.describe(known)).join(', ')})`,
      )
    }
    started = true
  })

  // Readiness fails from here on while in-flight requests finish. An app whose start failed
  // served nothing, no balancer sends it requests: it closes without the drain.
  app.addHook('preClose', async () => {
    draining = true
    for (const stop of awaitingPing) stop()
    if (started && options.drainDelay > 0) await new Promise((resolve) => setTimeout(resolve, options.drainDelay))
  })
}

/** `/health/live`, `/health/ready` and `/health` in `application/health+json`. */
export const pgPoolHealth = fp(health, {
  name: '@fastify-pg-pool/health',
  fastify: '5.x',
  dependencies: ['@fastify-pg-pool/core'],
})
