import { execFile } from 'node:child_process'
import { mkdtemp, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { dirname, join, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'
import { promisify } from 'node:util'
import postgres from 'postgres'
import { afterAll, beforeAll, describe, expect, test } from 'vitest'
import { startTlsServer, type TlsServer } from '../support/tls-server.js'

const root = resolve(dirname(fileURLToPath(import.meta.url)), '../..')
// Node's codes for a chain that does not lead to a trusted CA.
const UNTRUSTED = ['UNABLE_TO_GET_ISSUER_CERT_LOCALLY', 'UNABLE_TO_VERIFY_LEAF_SIGNATURE', 'SELF_SIGNED_CERT_IN_CHAIN']

let tls: TlsServer
const clients: postgres.Sql[] = []

function connect(url: string, options: postgres.Options<Record<string, never>> = {}): postgres.Sql {
  const sql = postgres(url, { max: 1, onnotice: () => {}, connect_timeout: 10, ...options })
  clients.push(sql)
  return sql
}

async function sslOf(sql: postgres.Sql): Promise<{ ssl: boolean; version: string }> {
  const [row] = await sql<{ ssl: boolean; version: string }[]>`
    select ssl, version from pg_stat_ssl where pid = pg_backend_pid()`
  return row as { ssl: boolean; version: string }
}

function withParams(url: string, params: Record<string, string>): string {
  const parsed = new URL(url)
  for (const [key, value] of Object.entries(params)) parsed.searchParams.set(key, value)
  return parsed.toString()
}

beforeAll(async () => {
  const started = Date.now()
  tls = await startTlsServer()
  console.log(`[tls:harness] CA, certificate and TLS server ready in ${Date.now() - started} ms`)
})
afterAll(async () => {
  await Promise.all(clients.map((sql) => sql.end({ timeout: 1 })))
  await tls?.destroy()
})

describe('TLS test server', () => {
  test('postgres.js verifying against the CA connects over TLS (chain and host name checked)', async () => {
    const sql = connect(tls.url, { ssl: { ca: tls.caPem } })
    expect(await sslOf(sql)).toEqual({ ssl: true, version: expect.stringMatching(/^TLSv1\.[23]$/) })
    // The certificate names localhost too.
    const byName = connect(tls.url, { ssl: { ca: tls.caPem, servername: 'localhost' } })
    expect((await sslOf(byName)).ssl).toBe(true)
  })

  test('the ssl option wins over the URL sslmode, and direct TLS negotiation works', async () => {
    const sql = connect(withParams(tls.url, { sslmode: 'verify-full', sslnegotiation: 'direct' }), {
      ssl: { ca: tls.caPem },
    })
    expect((await sslOf(sql)).ssl).toBe(true)
  })

  test('verifying against another CA fails', async () => {
    const sql = connect(tls.url, { ssl: { ca: tls.wrongCaPem } })
    const error = (await sql`select 1`.catch((e: unknown) => e)) as { code?: string }
    expect(UNTRUSTED).toContain(error.code)
  })

  test('a certificate for another host name fails verification', async () => {
    const sql = connect(tls.url, { ssl: { ca: tls.caPem, servername: 'db.example.com' } })
    await expect(sql`select 1`).rejects.toMatchObject({ code: 'ERR_TLS_CERT_ALTNAME_INVALID' })
  })

  test('?sslmode=verify-full checks against the trust store: refused as is, accepted with the CA added', async () => {
    const url = withParams(tls.url, { sslmode: 'verify-full' })
    const error = (await connect(url)`select 1`.catch((e: unknown) => e)) as { code?: string }
    expect(UNTRUSTED).toContain(error.code)
    // sslmode=require encrypts without verifying.
    expect((await sslOf(connect(withParams(tls.url, { sslmode: 'require' })))).ssl).toBe(true)

    // The URL alone verifies once the process trusts the CA (NODE_EXTRA_CA_CERTS, read at start).
    const dir = await mkdtemp(join(tmpdir(), 'fpp-tls-ca-'))
    try {
      await writeFile(join(dir, 'ca.pem'), tls.caPem)
      const script = `
        import postgres from 'postgres'
        const sql = postgres(process.env.URL, { max: 1, onnotice: () => {} })
        const [row] = await sql\`select ssl from pg_stat_ssl where pid = pg_backend_pid()\`
        await sql.end()
        console.log(JSON.stringify(row))`
      const { stdout } = await promisify(execFile)(process.execPath, ['--input-type=module', '-e', script], {
        cwd: root,
        env: { ...process.env, URL: url, NODE_EXTRA_CA_CERTS: join(dir, 'ca.pem') },
        timeout: 20_000,
      })
      expect(JSON.parse(stdout)).toEqual({ ssl: true })
    } finally {
      await rm(dir, { recursive: true, force: true })
    }
  })

  test('a connection without TLS is refused: pg_hba has hostssl lines only', async () => {
    const sql = connect(tls.url, { ssl: false })
    const error = (await sql`select 1`.catch((e: unknown) => e)) as { code?: string; message?: string }
    expect(error.code).toBe('28000')
    expect(error.message).toMatch(/no encryption/)
  })
})
