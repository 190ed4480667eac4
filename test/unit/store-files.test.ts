import { mkdir, readdir, readFile, stat, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import t from 'tap'
import { ensureDir, fsyncDir, writeFileAtomic } from '../../agent/files.js'

const modeOf = async (path: string) => (await stat(path)).mode & 0o777

t.test('writeFileAtomic: writes a new file with mode 0600 and leaves no temp file', async (t) => {
  const dir = t.testdir()
  const path = join(dir, 'state.json')
  await writeFileAtomic(path, '{"a":1}\n')
  t.equal(await readFile(path, 'utf8'), '{"a":1}\n')
  t.equal(await modeOf(path), 0o600)
  t.same(await readdir(dir), ['state.json'])
})

t.test('writeFileAtomic: replaces existing content, bytes included, with the mode asked for despite the umask', async (t) => {
  const dir = t.testdir({ 'state.json': 'old content that is longer than the new one' })
  const path = join(dir, 'state.json')
  const umask = process.umask(0o077)
  t.teardown(() => void process.umask(umask))
  await writeFileAtomic(path, Buffer.from('new'), 0o640)
  t.equal(await readFile(path, 'utf8'), 'new')
  t.equal(await modeOf(path), 0o640)
  t.same(await readdir(dir), ['state.json'])
})

t.test('writeFileAtomic: a failed rename keeps the target and removes the temp file', async (t) => {
  const dir = t.testdir({ target: { 'keep.txt': 'x' } })
  await t.rejects(writeFileAtomic(join(dir, 'target'), 'data'), { code: 'EISDIR' })
  t.same(await readdir(dir), ['target'])
  t.equal(await readFile(join(dir, 'target', 'keep.txt'), 'utf8'), 'x')
})

t.test('writeFileAtomic: a missing directory is an error', async (t) => {
  const dir = t.testdir()
  await t.rejects(writeFileAtomic(join(dir, 'missing', 'f'), 'data'), { code: 'ENOENT' })
})

t.test('ensureDir: creates missing parents with mode 0700 and accepts an existing directory', async (t) => {
  const dir = t.testdir()
  const deep = join(dir, 'a', 'b', 'c')
  await ensureDir(deep)
  t.ok((await stat(deep)).isDirectory())
  t.equal(await modeOf(join(dir, 'a')), 0o700)
  t.equal(await modeOf(deep), 0o700)
  await ensureDir(deep)
  await ensureDir(join(dir, 'd'), 0o750)
  t.equal(await modeOf(join(dir, 'd')), 0o750)
})

t.test('ensureDir: a file in the way is an error', async (t) => {
  const dir = t.testdir({ file: 'x' })
  await t.rejects(ensureDir(join(dir, 'file')), { code: 'EEXIST' })
})

t.test('fsyncDir: syncs an existing directory and fails on a missing one', async (t) => {
  const dir = t.testdir()
  await mkdir(join(dir, 'sub'))
  await writeFile(join(dir, 'sub', 'f'), 'x')
  await fsyncDir(join(dir, 'sub'))
  await t.rejects(fsyncDir(join(dir, 'nope')), { code: 'ENOENT' })
})
