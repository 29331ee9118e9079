import { errors, optionKit } from '@fastify-pg-pool/core'
import { describe, expect, test } from 'vitest'

const { checkKeys, closestName, coreOptionAliases, coreOptionKeys, describe: show, resolveTable } = optionKit

function thrown(fn: () => unknown): Error & { code?: string } {
  try {
    fn()
  } catch (error) {
    return error as Error & { code?: string }
  }
  throw new Error('did not throw')
}

describe('closestName', () => {
  const umbrella = [...coreOptionKeys, 'health', 'metrics', 'backpressure']
  test.each([
    ['onlease', 'onLease'],
    ['helth', 'health'],
    ['backpresure', 'backpressure'],
    ['Pool', 'pool'],
    ['metrcis', 'metrics'],
    ['connectionString', 'connection'],
    ['connection_string', 'connection'],
    ['DATABASE_URL', 'connection'],
    ['host', 'connection'],
    ['password', 'connection'],
    ['poolSize', 'pool.max'],
    ['max', 'pool.max'],
    ['idle_timeout', 'pool.idleTimeout'],
  ])('%s at the top level → %s', (typo, meant) => {
    expect(closestName(typo, umbrella, coreOptionAliases)).toBe(meant)
  })

  test('other spellings of the same words, and words in another order', () => {
    expect(closestName('ping_timeout', ['pingTimeout', 'cacheTime'])).toBe('pingTimeout')
    expect(closestName('retryAfterMax', ['minRetryAfter', 'maxRetryAfter'])).toBe('maxRetryAfter')
    expect(closestName('transacton', ['transaction', 'pipeline'])).toBe('transaction')
  })

  test('no suggestion for a name nothing resembles, nor for a one-letter key', () => {
    expect(closestName('timeout', ['health', 'metrics'])).toBeUndefined()
    expect(closestName('x', ['y', 'z'])).toBeUndefined()
  })
})

describe('describe', () => {
  test('strings are quoted, unless they read like a connection string; objects are shown by kind only', () => {
    // Since round thirteen a URL (or `key=value`, `%`, `pass`) is not quoted at all: no redaction
    // knows every spelling of its secret (`?pass%77ord=`, libpq's `password=` form).
    expect(show('postgres://app:S3cret@db:5432/app')).toBe('a string (not shown: it may hold a password)')
    expect(show('host=db password=S3cret')).toBe('a string (not shown: it may hold a password)')
    expect(show('5 sec')).toBe('"5 sec"')
    expect(show({ password: 'S3cret' })).toBe('an object')
    expect(show([0.5, 'a'])).toBe('[0.5, "a"]')
    expect(show(() => 1)).toBe('a function')
    expect(show(null)).toBe('null')
    expect(show(undefined)).toBe('undefined')
    expect(show(2.5)).toBe('2.5')
    expect(show('x'.repeat(500)).length).toBeLessThan(130)
  })
})

describe('checkKeys', () => {
  test('names the full key and the closest valid name', () => {
    const error = thrown(() => checkKeys('backpressure.retryStorm', { factr: 2 }, ['factor', 'delay']))
    expect(error).toBeInstanceOf(errors.FST_PG_POOL_INVALID_OPTION)
    expect(error.code).toBe('FST_PG_POOL_INVALID_OPTION')
    expect(error.message).toBe('Invalid option backpressure.retryStorm.factr: unknown option; did you mean factor?')
  })

  test('without a close name, lists the valid ones', () => {
    expect(thrown(() => checkKeys('health', { zzz: 1 }, ['livePath', 'readyPath'])).message).toBe(
      'Invalid option health.zzz: unknown option; expected one of livePath, readyPath',
    )
  })

  test("Fastify's register options are not typos where ignored", () => {
    expect(() =>
      checkKeys('', { prefix: '/x', logLevel: 'warn', logSerializers: {} }, ['a'], {
        ignore: optionKit.fastifyRegisterKeys,
      }),
    ).not.toThrow()
    expect(() => checkKeys('', { prefix: '/x' }, ['a'])).toThrow(/Invalid option prefix/)
  })
})

describe('resolveTable', () => {
  const table = {
    size: optionKit.integer({ min: 1, default: 10 }),
    cap: optionKit.integer({ min: 0, default: undefined }),
    ratio: optionKit.number({ min: 0, max: 1, default: 0.5 }),
    mode: optionKit.oneOf(['auto', 'always'], 'auto'),
    on: optionKit.boolean(false),
    path: optionKit.routePath('/x'),
    storm: optionKit.feature({ factor: optionKit.number({ above: 0, default: 10 }) }),
  }

  test('absent options take their defaults, typed; the result is frozen', () => {
    const resolved = resolveTable('part', undefined, table)
    expect(resolved).toEqual({
      size: 10,
      cap: undefined,
      ratio: 0.5,
      mode: 'auto',
      on: false,
      path: '/x',
      storm: { factor: 10 },
    })
    expect(Object.isFrozen(resolved)).toBe(true)
    const mode: 'auto' | 'always' = resolved.mode
    const cap: number | undefined = resolved.cap
    expect([mode, cap]).toEqual(['auto', undefined])
    expect(resolveTable('part', { storm: false, path: false }, table)).toMatchObject({ storm: false, path: false })
  })

  test.each([
    [{ size: 0 }, 'Invalid option part.size: expected an integer >= 1, got 0'],
    [{ size: 2.5 }, 'Invalid option part.size: expected an integer >= 1, got 2.5'],
    [{ size: '5' }, 'Invalid option part.size: expected an integer >= 1, got "5"'],
    [{ ratio: 2 }, 'Invalid option part.ratio: expected a number from 0 to 1, got 2'],
    [{ mode: 'never' }, `Invalid option part.mode: expected 'auto' or 'always', got "never"`],
    [{ on: 'yes' }, 'Invalid option part.on: expected a boolean, got "yes"'],
    [{ path: 'x' }, 'Invalid option part.path: expected a path starting with / or false, got "x"'],
    [{ storm: true }, 'Invalid option part.storm: expected an object or false, got true'],
    [{ storm: { factor: 0 } }, 'Invalid option part.storm.factor: expected a number > 0, got 0'],
    [{ storm: { facter: 1 } }, 'Invalid option part.storm.facter: unknown option; did you mean factor?'],
    [{ sise: 1 }, 'Invalid option part.sise: unknown option; did you mean size?'],
  ])('%j: %s', (given, message) => {
    const error = thrown(() => resolveTable('part', given, table))
    expect(error.code).toBe('FST_PG_POOL_INVALID_OPTION')
    expect(error.message).toBe(message)
  })

  test('integers from strings only where asked (URL query, environment)', () => {
    const spec = optionKit.integer({ min: 1, default: 1, strings: true })
    expect(spec.read('5', 'pool.max')).toBe(5)
    expect(() => spec.read('five', 'pool.max')).toThrow('Invalid option pool.max: expected an integer >= 1, got "five"')
  })

  test('a route prefix starts with / and loses its trailing /', () => {
    expect(optionKit.routePrefix.read(undefined, 'p')).toBe('')
    expect(optionKit.routePrefix.read('/internal/', 'p')).toBe('/internal')
    expect(() => optionKit.routePrefix.read('internal', 'p')).toThrow(/expected a route prefix starting with \//)
    expect(optionKit.prefixed('/internal', '/health')).toBe('/internal/health')
    expect(optionKit.prefixed('/internal', false)).toBe(false)
  })
})
