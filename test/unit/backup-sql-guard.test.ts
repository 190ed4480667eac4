import { Readable, Writable } from 'node:stream'
import { pipeline } from 'node:stream/promises'
import t from 'tap'
import { SqlScriptGuard } from '../../agent/backup/sql-guard.js'

/** Runs `script` through the guard in chunks of `size` bytes; returns what came out, and the error if refused. */
async function guard(script: string, size = 1 << 16): Promise<{ out: string; error?: Error }> {
  const bytes = Buffer.from(script)
  const chunks: Buffer[] = []
  for (let i = 0; i < bytes.length; i += size) chunks.push(bytes.subarray(i, i + size))
  const out: Buffer[] = []
  const sink = new Writable({ write(chunk: Buffer, _e, cb) { out.push(chunk); cb() } })
  try {
    await pipeline(Readable.from(chunks), new SqlScriptGuard(), sink)
    return { out: Buffer.concat(out).toString() }
  } catch (error) {
    return { out: Buffer.concat(out).toString(), error: error as Error }
  }
}

const DUMP = [
  '--',
  '-- PostgreSQL database dump',
  '\\restrict Yds6bIANmy9cut',
  'SET client_encoding = \'UTF8\';',
  'CREATE TABLE public.t (id integer, v text);',
  'COPY public.t (id, v) FROM stdin;',
  '1\t\\N',
  '\\restrict\tnot a command: a value starting with a carriage return',
  '\\\\connect\tescaped backslash',
  '\\.',
  '  ',
  'SELECT 1;',
  '\\unrestrict Yds6bIANmy9cut',
  '',
].join('\n')

t.test('SqlScriptGuard: a pg_dump script passes unchanged, however it is chunked', async (t) => {
  for (const size of [1, 2, 3, 7, 64, 1 << 16]) {
    const { out, error } = await guard(DUMP, size)
    t.equal(error, undefined, `chunks of ${size}`)
    t.equal(out, DUMP, `chunks of ${size}`)
  }
  t.same(await guard('SELECT 1;'), { out: 'SELECT 1;' }, 'no final newline')
})

t.test('SqlScriptGuard: psql commands at the start of a line are refused before psql sees them', async (t) => {
  for (const command of ['\\connect lifeos', '\\c lifeos', '  \\! rm -rf /', '\\o /tmp/x', '\\i /etc/passwd', '\\copy t to program \'x\'', '\\restricted x', '\\']) {
    for (const size of [1, 5, 1 << 16]) {
      const { out, error } = await guard(`SELECT 1;\n${command}\nSELECT 2;\n`, size)
      t.match(error?.message, /psql command .* which a restore does not allow/, `${command} in chunks of ${size}`)
      t.equal(out, 'SELECT 1;\n', 'only the lines before it went through')
    }
  }
  t.match((await guard('\\connect x')).error?.message, /\\connect/, 'at the very end, without a newline')
})

t.test('SqlScriptGuard: only COPY … FROM stdin starts data; COPY … TO stdout does not hide commands', async (t) => {
  t.match((await guard('COPY public.t TO stdout;\n\\! id\n\\.\n')).error?.message, /\\!/)
  const copy = 'COPY public.t (id) FROM stdin;\r\n\\! not run: data\r\n\\.\r\n\\! id\n'
  t.match((await guard(copy)).error?.message, /\\!/, 'commands after the end of data are judged again')
})
