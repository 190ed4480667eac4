import t from 'tap'
import { connectionOf, derivedName, onDatabase, quoteIdent, sqlState, toolEnv } from '../../agent/pg/connection.js'

t.test('connectionOf: the password leaves the URL; an explicit one wins', async (t) => {
  t.same(connectionOf({ url: 'postgres://app:s%40cret@db.internal:5433/lifeos?sslmode=require' }), {
    url: 'postgres://app@db.internal:5433/lifeos?sslmode=require',
    password: 's@cret',
    database: 'lifeos',
  })
  t.same(connectionOf({ url: 'postgresql://app@127.0.0.1/lifeos', password: 'from-file' }), {
    url: 'postgresql://app@127.0.0.1/lifeos',
    password: 'from-file',
    database: 'lifeos',
  })
  t.equal(connectionOf({ url: 'postgres://app:inurl@h/db', password: 'file' }).password, 'file')
  t.equal(connectionOf({ url: 'postgres://app@h/db' }).password, undefined)
})

t.test('connectionOf: a password in the query string (libpq reads it there too) leaves the URL as well', async (t) => {
  t.same(connectionOf({ url: 'postgres://app@h:5433/lifeos?sslmode=require&password=s%40cret' }), {
    url: 'postgres://app@h:5433/lifeos?sslmode=require',
    password: 's@cret',
    database: 'lifeos',
  })
  t.same(connectionOf({ url: 'postgres://app@h/lifeos?password=q' }), { url: 'postgres://app@h/lifeos', password: 'q', database: 'lifeos' })
  // libpq lets the query override the user-info; an explicit password (passwordFile) still wins over both.
  t.equal(connectionOf({ url: 'postgres://app:userinfo@h/db?password=query' }).password, 'query')
  t.equal(connectionOf({ url: 'postgres://app@h/db?password=query', password: 'file' }).password, 'file')
  const conn = connectionOf({ url: 'postgres://app@h/db?password=a&password=b' })
  t.notMatch(conn.url, 'password', 'every copy of the parameter leaves the URL')
  t.notMatch(onDatabase(conn, 'postgres').url, 'password')
})

t.test('connectionOf: anything but a postgres URL naming one database is refused', async (t) => {
  for (const url of ['not a url', 'mysql://a@h/db', 'postgres://a@h/', 'postgres://a@h/db;drop', 'postgres://a@h/a/b']) {
    t.throws(() => connectionOf({ url }), { code: 'invalid_request' }, url)
  }
})

t.test('onDatabase, toolEnv: another database on the same server; the password only in PGPASSWORD', async (t) => {
  const conn = connectionOf({ url: 'postgres://app:pw@h:5433/lifeos?sslmode=require' })
  t.same(onDatabase(conn, 'postgres'), { url: 'postgres://app@h:5433/postgres?sslmode=require', password: 'pw', database: 'postgres' })
  const env = toolEnv(conn)
  t.equal(env.PGPASSWORD, 'pw')
  t.equal(env.PGCONNECT_TIMEOUT, process.env.PGCONNECT_TIMEOUT ?? '10')
  t.equal(env.PATH, process.env.PATH)
})

t.test('derivedName: within 63 bytes, the suffix intact', async (t) => {
  t.equal(derivedName('lifeos', 'restore', '0a1b2c3d'), 'lifeos_restore_0a1b2c3d')
  const long = derivedName('d'.repeat(63), 'restore', '0a1b2c3d')
  t.equal(long.length, 63)
  t.match(long, /^d+_restore_0a1b2c3d$/)
  t.equal(quoteIdent('a"b'), '"a""b"')
  t.equal(sqlState({ code: '55006' }), '55006')
  t.equal(sqlState({ code: 'ENOENT' }), undefined)
  t.equal(sqlState(null), undefined)
})
