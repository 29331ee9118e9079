import { summarizeQuery } from '@fastify-pg-pool/otel'
import { describe, expect, test } from 'vitest'

describe('db.query.summary and db.operation.name from the statement text', () => {
  // The conventions' own examples first, then what the suite and its users send.
  test.each([
    ['SELECT *\nFROM   wuser_table\nWHERE  username = $1', 'SELECT wuser_table', 'SELECT'],
    [
      'INSERT INTO shipping_details (order_id, address) SELECT order_id, address FROM orders WHERE order_id = $1',
      'INSERT shipping_details SELECT orders',
      'INSERT',
    ],
    ['SELECT * FROM songs, artists WHERE songs.artist_id == artists.id', 'SELECT songs artists', 'SELECT'],
    [
      'SELECT order_date FROM (SELECT * FROM orders o JOIN customers c ON o.customer_id = c.customer_id)',
      'SELECT SELECT orders customers',
      'SELECT',
    ],
    [`SELECT * FROM "song list", 'artists'`, 'SELECT "song list"', 'SELECT'],
    ['select id, name from fpp_bench_items where id = $1', 'select fpp_bench_items', 'select'],
    ['update only accounts set balance = balance - 10 where id = 1', 'update accounts', 'update'],
    ['delete from x using y where x.id = y.id', 'delete x y', 'delete'],
    ['insert into t (a) values ($1) on conflict (a) do update set a = excluded.a returning *', 'insert t', 'insert'],
    ['select * from a for update', 'select a', 'select'],
    ['select * from public.a left join b using (id) join c on c.id = a.id', 'select public.a b c', 'select'],
    [
      'with recent as (select * from orders) update stock set n = n - 1 from recent where stock.id = recent.id',
      'select orders update stock',
      'update',
    ],
    ['select pg_sleep(0.02)', 'select', 'select'],
    ['select id from generate_series(1, 100) as id where id = $1', 'select', 'select'],
    ['BEGIN ISOLATION LEVEL SERIALIZABLE', 'BEGIN', 'BEGIN'],
    ['COMMIT', 'COMMIT', 'COMMIT'],
    ['create table if not exists items (id int primary key)', 'create table items', 'create table'],
    ['truncate table a, b', 'truncate a b', 'truncate'],
    ['call archive_orders($1)', 'call archive_orders', 'call'],
    ['explain analyze select * from items', 'explain analyze select items', 'explain'],
  ])('%s', (text, summary, operation) => {
    expect(summarizeQuery(text)).toEqual({ summary, operation })
  })

  test('several statements: every operation in the summary, no single operation name', () => {
    expect(summarizeQuery('ROLLBACK; RESET ALL; DISCARD TEMP; SELECT pg_advisory_unlock_all()')).toEqual({
      summary: 'ROLLBACK RESET DISCARD SELECT',
      operation: undefined,
    })
  })

  test('never a literal, a comment or a parameter', () => {
    const text = `/* from secret_comment */ select 'from secret_string', E'it\\'s from secret_e', $tag$ from secret_dollar $tag$, 42, $1 -- from secret_line
      from visible`
    expect(summarizeQuery(text)).toEqual({ summary: 'select visible', operation: 'select' })
  })

  test('at most 255 characters, cut between words', () => {
    const tables = Array.from({ length: 60 }, (_, i) => `table_number_${i}`)
    const { summary } = summarizeQuery(`select * from ${tables.join(', ')}`)
    expect(summary.length).toBeLessThanOrEqual(255)
    expect(summary.split(' ').every((word) => word === 'select' || tables.includes(word))).toBe(true)
  })

  test('text it cannot read gives an empty summary, not a guess', () => {
    expect(summarizeQuery('')).toEqual({ summary: '', operation: undefined })
    expect(summarizeQuery('-- nothing')).toEqual({ summary: '', operation: undefined })
  })
})
