import { Readable, Writable } from 'node:stream'
import { pipeline } from 'node:stream/promises'
import t from 'tap'
import { psqlRestrictProblem } from '../../agent/pg/connection.js'
import { RestrictedSqlScript } from '../../agent/backup/sql-guard.js'

/** Runs `script` through the filter in chunks of `size` bytes; returns what came out, its key, and the error if refused. */
async function filter(script: string | Buffer, size = 1 << 16): Promise<{ out: string; key: string; error?: Error }> {
  const bytes = Buffer.from(script)
  const chunks: Buffer[] = []
  for (let i = 0; i < bytes.length; i += size) chunks.push(bytes.subarray(i, i + size))
  const out: Buffer[] = []
  const sink = new Writable({
    write(chunk: Buffer, _e, cb) {
      out.push(chunk)
      cb()
    },
  })
  const restricted = new RestrictedSqlScript()
  try {
    await pipeline(Readable.from(chunks), restricted, sink)
    return { out: Buffer.concat(out).toString(), key: restricted.key }
  } catch (error) {
    return { out: Buffer.concat(out).toString(), key: restricted.key, error: error as Error }
  }
}

const DUMP = [
  '--',
  '-- PostgreSQL database dump',
  '\\restrict Yds6bIANmy9cut',
  "SET client_encoding = 'UTF8';",
  'CREATE TABLE public.t (id integer, v text);',
  'ALTER TABLE public.t OWNER TO app;',
  'ALTER SCHEMA "Billing" OWNER TO "app owner";',
  'ALTER SEQUENCE public.t_id_seq OWNED BY public.t.id;',
  'COPY public.t (id, v) FROM stdin;',
  '1\t\\N',
  '\\restrict\tnot a command: a value starting with a carriage return',
  'ALTER TABLE x OWNER TO y;',
  '\\.',
  '  ',
  'SELECT 1; \\! id',
  '\\unrestrict Yds6bIANmy9cut',
  '',
].join('\n')

const WANTED = [
  '--',
  '-- PostgreSQL database dump',
  "SET client_encoding = 'UTF8';",
  'CREATE TABLE public.t (id integer, v text);',
  'ALTER SEQUENCE public.t_id_seq OWNED BY public.t.id;',
  'COPY public.t (id, v) FROM stdin;',
  '1\t\\N',
  '\\restrict\tnot a command: a value starting with a carriage return',
  'ALTER TABLE x OWNER TO y;',
  '\\.',
  '  ',
  'SELECT 1; \\! id',
  '',
].join('\n')

t.test(
  "RestrictedSqlScript: psql gets \\restrict with a fresh random key first; the dump's own \\restrict, \\unrestrict and OWNER TO lines are dropped outside COPY data, however it is chunked",
  async (t) => {
    const keys = new Set<string>()
    for (const size of [1, 2, 3, 7, 64, 1 << 16]) {
      const { out, key, error } = await filter(DUMP, size)
      t.equal(error, undefined, `chunks of ${size}`)
      t.match(key, /^[0-9a-f]{48}$/)
      t.equal(out, `\\restrict ${key}\n${WANTED}`, `chunks of ${size}`)
      keys.add(key)
    }
    t.equal(keys.size, 6, 'each run has its own key')
    const { out, key } = await filter('SELECT 1;')
    t.equal(out, `\\restrict ${key}\nSELECT 1;`, 'no final newline')
    t.equal((await filter('')).out.startsWith('\\restrict '), true, 'an empty script is restricted too')
  },
)

t.test('RestrictedSqlScript: lines longer than it holds pass unchanged', async (t) => {
  const long = `INSERT INTO t VALUES ('${'x'.repeat(10_000)}');\n`
  const { out, key } = await filter(long + 'ALTER TABLE t OWNER TO app;\n', 1000)
  t.equal(out, `\\restrict ${key}\n${long}`)
})

t.test('RestrictedSqlScript: a NUL byte (binary data, not SQL) is refused', async (t) => {
  t.match((await filter(Buffer.from('SELECT 1;\n\0PGDMP'))).error?.message, /not gzip'd SQL/)
})

t.test('psqlRestrictProblem: psql has \\restrict from 13.22, 14.19, 15.14, 16.10, 17.6 and 18', async (t) => {
  for (const ok of [
    'psql (PostgreSQL) 15.18 (Debian 15.18-0+deb12u1)',
    'psql (PostgreSQL) 15.14',
    'psql (PostgreSQL) 16.10',
    'psql (PostgreSQL) 17.6',
    'psql (PostgreSQL) 18.0',
    'psql (PostgreSQL) 19devel',
    'psql (PostgreSQL) 13.22',
  ]) {
    t.equal(psqlRestrictProblem(ok), null, ok)
  }
  for (const old of [
    'psql (PostgreSQL) 15.13',
    'psql (PostgreSQL) 16.9',
    'psql (PostgreSQL) 17.5',
    'psql (PostgreSQL) 12.22',
    'psql (PostgreSQL) 9.6.24',
  ]) {
    t.match(psqlRestrictProblem(old), /has no \\restrict.*15\.14, 16\.10, 17\.6/, old)
  }
  t.match(psqlRestrictProblem('spawn psql ENOENT'), /cannot tell the version of psql/)
})
