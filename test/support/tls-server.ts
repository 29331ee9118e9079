/**
 * An embedded PostgreSQL 18 with `ssl=on`, its certificate chain made at run time: a throwaway CA
 * and a server certificate for 127.0.0.1, ::1 and localhost signed by it.
 *
 * ```ts
 * const tls = await startTlsServer()
 * const sql = postgres(tls.url, { ssl: { ca: tls.caPem } })   // verify-full: chain and host name
 * await sql`select ssl from pg_stat_ssl where pid = pg_backend_pid()`  // [{ ssl: true }]
 * postgres(tls.url, { ssl: { ca: tls.wrongCaPem } })          // fails: unknown issuer
 * postgres(tls.url)                                           // refused: pg_hba has hostssl only
 * await tls.destroy()
 * ```
 *
 * Certificates come from `selfsigned` (Node's own WebCrypto, EC P-256): nothing but Node and npm
 * is needed, no openssl binary.
 */
import { chown, mkdtemp, rm, writeFile } from 'node:fs/promises'
import { isIP } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { generate } from 'selfsigned'
import { type EmbeddedServer, postgresProcessUser, startEmbeddedServer } from './embedded-server.js'

export interface TestCertificates {
  /** The CA certificate to trust (`ssl: { ca }`). */
  readonly caPem: string
  readonly caKeyPem: string
  /** The server certificate, signed by the CA, for `hosts`. */
  readonly certPem: string
  readonly keyPem: string
}

export interface TlsServer {
  /** Superuser URL of the `postgres` database, without `sslmode` (choose it per test). */
  readonly url: string
  readonly port: number
  readonly password: string
  /** The CA that signed the server's certificate. */
  readonly caPem: string
  /** Another CA, unrelated to the server: verifying against it must fail. */
  readonly wrongCaPem: string
  /** The server's certificate (leaf only: the server sends no chain). */
  readonly certPem: string
  /** Host names and addresses the certificate names. */
  readonly hosts: readonly string[]
  /** Stops the server (its data kept) and starts it again on the same port, same certificate. */
  stop(): Promise<void>
  start(): Promise<void>
  /** Stops it and deletes its data, certificates and key. */
  destroy(): Promise<void>
}

export interface TlsServerOptions {
  /**
   * Also accept connections without TLS (pg_hba `host` besides `hostssl`). Off by default: only
   * `hostssl` lines, so a plain connection is refused.
   */
  allowPlaintext?: boolean
}

const DEFAULT_HOSTS = ['127.0.0.1', '::1', 'localhost']
/** Long enough for any run; the certificates live as long as the test's temp directory. */
const VALIDITY_DAYS = 7
/** notBefore in the past: a certificate made this very second is valid on a clock a little behind. */
const BACKDATE_MS = 60 * 60 * 1000

function validity(): { notBeforeDate: Date; notAfterDate: Date } {
  const now = Date.now()
  return { notBeforeDate: new Date(now - BACKDATE_MS), notAfterDate: new Date(now + VALIDITY_DAYS * 86_400_000) }
}

async function generateCa(commonName: string): Promise<{ certPem: string; keyPem: string }> {
  const ca = await generate([{ name: 'commonName', value: commonName }], {
    keyType: 'ec',
    algorithm: 'sha256',
    ...validity(),
    extensions: [
      { name: 'basicConstraints', cA: true, pathLenConstraint: 0, critical: true },
      { name: 'keyUsage', keyCertSign: true, cRLSign: true, critical: true },
    ],
  })
  return { certPem: ca.cert, keyPem: ca.private }
}

/** A throwaway CA and a server certificate it signed for `hosts` (IP addresses and DNS names). */
export async function generateTestCertificates(hosts: readonly string[] = DEFAULT_HOSTS): Promise<TestCertificates> {
  const ca = await generateCa('fastify-pg-pool test CA')
  const altNames = hosts.map((host) =>
    isIP(host) ? { type: 7 as const, ip: host } : { type: 2 as const, value: host },
  )
  const server = await generate([{ name: 'commonName', value: hosts.find((host) => !isIP(host)) ?? 'db' }], {
    keyType: 'ec',
    algorithm: 'sha256',
    ...validity(),
    ca: { key: ca.keyPem, cert: ca.certPem },
    extensions: [
      { name: 'basicConstraints', cA: false, critical: true },
      { name: 'keyUsage', digitalSignature: true, keyEncipherment: true, critical: true },
      { name: 'extKeyUsage', serverAuth: true },
      { name: 'subjectAltName', altNames },
    ],
  })
  return { caPem: ca.certPem, caKeyPem: ca.keyPem, certPem: server.cert, keyPem: server.private }
}

/** An embedded PostgreSQL with TLS on, on a free port; pg_hba accepts only `hostssl` by default. */
export async function startTlsServer(options: TlsServerOptions = {}): Promise<TlsServer> {
  const [certificates, wrongCa] = await Promise.all([generateTestCertificates(), generateCa('unrelated test CA')])
  const user = await postgresProcessUser()
  const dir = await mkdtemp(join(tmpdir(), 'fpp-tls-'))
  const files = {
    cert: join(dir, 'server.crt'),
    key: join(dir, 'server.key'),
    hba: join(dir, 'pg_hba.conf'),
  }
  const hba = [
    'hostssl all all 127.0.0.1/32 scram-sha-256',
    'hostssl all all ::1/128 scram-sha-256',
    ...(options.allowPlaintext
      ? ['host all all 127.0.0.1/32 scram-sha-256', 'host all all ::1/128 scram-sha-256']
      : []),
    '',
  ].join('\n')
  let server: EmbeddedServer | undefined
  try {
    await writeFile(files.cert, certificates.certPem)
    // PostgreSQL refuses a key that others can read.
    await writeFile(files.key, certificates.keyPem, { mode: 0o600 })
    await writeFile(files.hba, hba)
    if (user) {
      // The server runs as the postgres OS user: it must reach the directory and own the key.
      for (const path of [dir, files.cert, files.key, files.hba]) await chown(path, user.uid, user.gid)
    }
    server = await startEmbeddedServer({
      postgresFlags: [
        '-c',
        'ssl=on',
        '-c',
        `ssl_cert_file=${files.cert}`,
        '-c',
        `ssl_key_file=${files.key}`,
        '-c',
        `hba_file=${files.hba}`,
      ],
    })
  } catch (error) {
    await rm(dir, { recursive: true, force: true })
    throw error
  }
  const running = server
  return {
    url: running.url,
    port: running.port,
    password: running.password,
    caPem: certificates.caPem,
    wrongCaPem: wrongCa.certPem,
    certPem: certificates.certPem,
    hosts: DEFAULT_HOSTS,
    stop: () => running.stop(),
    start: () => running.start(),
    async destroy() {
      await running.destroy()
      await rm(dir, { recursive: true, force: true })
    },
  }
}
