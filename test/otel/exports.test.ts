import { existsSync, readFileSync } from 'node:fs'
import { errors as coreErrors } from '@fastify-pg-pool/core'
import * as otelPackage from '@fastify-pg-pool/otel'
import pgPoolOtel, { ATTR, errors, instrumentPools, METRIC } from '@fastify-pg-pool/otel'
import * as semconv from '@opentelemetry/semantic-conventions/incubating'
import { describe, expect, test } from 'vitest'

const packageDir = new URL('../../packages/otel/', import.meta.url)
const manifest = JSON.parse(readFileSync(new URL('package.json', packageDir), 'utf8'))
const readme = readFileSync(new URL('README.md', packageDir), 'utf8')

describe('exports', () => {
  test('the plugin is the default and a named export, with fastify-plugin metadata', () => {
    expect(pgPoolOtel).toBe(otelPackage.pgPoolOtel)
    const meta = (pgPoolOtel as unknown as Record<symbol, unknown>)[Symbol.for('plugin-meta')]
    expect(meta).toMatchObject({
      name: '@fastify-pg-pool/otel',
      fastify: '5.x',
      dependencies: ['@fastify-pg-pool/core'],
    })
    expect(Object.keys(otelPackage).sort()).toEqual([
      'APPLICATION_NAME_BYTES',
      'ATTR',
      'DURATION_BUCKETS',
      'METRIC',
      'REFUSAL_EVENT',
      'SPAN',
      'applicationNameFormats',
      'default',
      'defaultApplicationNameFormat',
      'defaultPoolName',
      'errors',
      'instrumentPools',
      'pgPoolOtel',
      'summarizeQuery',
      'traceContextApplicationName',
      'traceContextOnLease',
      'traceparentOf',
    ])
  })

  test('depends on @opentelemetry/api alone (a peer), no SDK', () => {
    expect(manifest).toMatchObject({
      name: '@fastify-pg-pool/otel',
      license: 'MIT',
      engines: { node: '>=20.19' },
      peerDependencies: { '@opentelemetry/api': '^1.9.0' },
    })
    const runtime = Object.keys({ ...manifest.dependencies, ...manifest.peerDependencies })
    expect(runtime.filter((name) => name.startsWith('@opentelemetry/'))).toEqual(['@opentelemetry/api'])
    expect(existsSync(new URL('LICENSE', packageDir))).toBe(true)
  })
})

describe('names', () => {
  test('attribute and metric names are the semantic conventions’ own', () => {
    expect(ATTR.dbSystemName).toBe(semconv.ATTR_DB_SYSTEM_NAME)
    expect(ATTR.dbNamespace).toBe(semconv.ATTR_DB_NAMESPACE)
    expect(ATTR.dbOperationName).toBe(semconv.ATTR_DB_OPERATION_NAME)
    expect(ATTR.dbQuerySummary).toBe(semconv.ATTR_DB_QUERY_SUMMARY)
    expect(ATTR.dbQueryText).toBe(semconv.ATTR_DB_QUERY_TEXT)
    expect(ATTR.dbResponseStatusCode).toBe(semconv.ATTR_DB_RESPONSE_STATUS_CODE)
    expect(ATTR.serverAddress).toBe(semconv.ATTR_SERVER_ADDRESS)
    expect(ATTR.serverPort).toBe(semconv.ATTR_SERVER_PORT)
    expect(ATTR.errorType).toBe(semconv.ATTR_ERROR_TYPE)
    expect(ATTR.poolName).toBe(semconv.ATTR_DB_CLIENT_CONNECTION_POOL_NAME)
    expect(ATTR.connectionState).toBe(semconv.ATTR_DB_CLIENT_CONNECTION_STATE)
    expect(semconv.DB_SYSTEM_NAME_VALUE_POSTGRESQL).toBe('postgresql')
    expect([semconv.DB_CLIENT_CONNECTION_STATE_VALUE_IDLE, semconv.DB_CLIENT_CONNECTION_STATE_VALUE_USED]).toEqual([
      'idle',
      'used',
    ])
    expect(METRIC).toEqual({
      connectionCount: semconv.METRIC_DB_CLIENT_CONNECTION_COUNT,
      idleMax: semconv.METRIC_DB_CLIENT_CONNECTION_IDLE_MAX,
      idleMin: semconv.METRIC_DB_CLIENT_CONNECTION_IDLE_MIN,
      max: semconv.METRIC_DB_CLIENT_CONNECTION_MAX,
      pendingRequests: semconv.METRIC_DB_CLIENT_CONNECTION_PENDING_REQUESTS,
      timeouts: semconv.METRIC_DB_CLIENT_CONNECTION_TIMEOUTS,
      createTime: semconv.METRIC_DB_CLIENT_CONNECTION_CREATE_TIME,
      waitTime: semconv.METRIC_DB_CLIENT_CONNECTION_WAIT_TIME,
      useTime: semconv.METRIC_DB_CLIENT_CONNECTION_USE_TIME,
      operationDuration: semconv.METRIC_DB_CLIENT_OPERATION_DURATION,
    })
  })

  test('the README names every metric and attribute the package emits', () => {
    for (const name of [...Object.values(METRIC), ...Object.values(ATTR)]) expect(readme, name).toContain(`\`${name}\``)
  })
})

describe('options', () => {
  test.each([
    [{ traces: 'yes' }, 'Invalid option otel.traces: expected a boolean, got "yes"'],
    [
      { tracerProvider: {} },
      'Invalid option otel.tracerProvider: expected a TracerProvider (an object with getTracer()), got an object',
    ],
    [
      { meterProvider: 1 },
      'Invalid option otel.meterProvider: expected a MeterProvider (an object with getMeter()), got 1',
    ],
    [{ poolName: 'primary' }, 'Invalid option otel.poolName: expected a function (view) => string, got "primary"'],
    [{ queryTxt: true }, 'Invalid option otel.queryTxt: unknown option; did you mean queryText?'],
  ])('%o is refused, naming the option and the value', (options, message) => {
    let thrown: unknown
    try {
      instrumentPools([], options as never)
    } catch (error) {
      thrown = error
    }
    expect(thrown).toBeInstanceOf(coreErrors.FST_PG_POOL_INVALID_OPTION)
    expect((thrown as Error).message).toBe(message)
  })

  test('every error code is documented in the README with its status', () => {
    expect(Object.keys(errors)).toEqual(['FST_PG_POOL_INVALID_OPTION'])
    for (const [code, ErrorClass] of Object.entries(errors)) {
      const status = new ErrorClass('x', 'y').statusCode
      expect(readme).toMatch(new RegExp(`\\|\\s*\`${code}\`\\s*\\|\\s*${status}\\s*\\|`))
    }
  })
})
