// The dblink tests of round fifteen: a libpq connection string to the test database.
import type { TestDatabase } from '../../support/database.js'

/** dblink's conninfo for the test database, direct (not through PgBouncer); named when given. */
export function dblinkConninfo(db: TestDatabase, applicationName?: string): string {
  const url = new URL(db.directUrl)
  return [
    `host=${url.hostname}`,
    `port=${url.port || 5432}`,
    `dbname=${url.pathname.slice(1)}`,
    `user=${decodeURIComponent(url.username)}`,
    ...(url.password ? [`password=${decodeURIComponent(url.password)}`] : []),
    ...(applicationName === undefined ? [] : [`application_name=${applicationName}`]),
  ].join(' ')
}
