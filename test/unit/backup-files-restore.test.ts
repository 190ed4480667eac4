import { readdir, readFile, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import t from 'tap'
import { placeEntry, planFiles, sidePaths, swapProblems, swapSides, type SidePath } from '../../agent/backup/files-restore.js'
import type { TarEntry } from '../../agent/backup/tar-reader.js'
import { tempDir } from '../helpers/tmp.js'

const ROOTS = ['/srv/shop/uploads', '/srv/shop/config.yaml']
const entry = (name: string, type: TarEntry['type'] = 'file', linkname = '', flag = '0'): TarEntry => ({
  name,
  type,
  flag,
  mode: 0o644,
  uid: 0,
  gid: 0,
  mtime: 0,
  size: 0,
  linkname,
})
const problem = (e: TarEntry) => {
  const placed = placeEntry(e, ROOTS)
  return 'problem' in placed ? placed.problem : null
}

t.test('placeEntry: members of the backed-up paths land below them', async (t) => {
  t.same(placeEntry(entry('./srv/shop/uploads/', 'dir'), ROOTS), { root: '/srv/shop/uploads', rel: '' })
  t.same(placeEntry(entry('./srv/shop/uploads/a/b.png'), ROOTS), { root: '/srv/shop/uploads', rel: '/a/b.png' })
  t.same(placeEntry(entry('srv/shop/config.yaml'), ROOTS), { root: '/srv/shop/config.yaml', rel: '' })
  t.same(placeEntry(entry('./srv/shop/uploads/a/l', 'symlink', '../b.png'), ROOTS), { root: '/srv/shop/uploads', rel: '/a/l' })
  t.same(placeEntry(entry('./srv/shop/uploads/h', 'hardlink', './srv/shop/uploads/a/b.png'), ROOTS), {
    root: '/srv/shop/uploads',
    rel: '/h',
  })
})

t.test('placeEntry: each hostile member is refused', async (t) => {
  t.equal(problem(entry('/etc/passwd')), 'has an absolute path')
  t.equal(problem(entry('./srv/shop/uploads/../../../etc/passwd')), 'has a ".." segment')
  t.equal(problem(entry('../x')), 'has a ".." segment')
  t.equal(problem(entry('./srv/shop/uploads-evil/x')), 'lies outside the backed-up paths')
  t.equal(problem(entry('./etc/cron.d/x')), 'lies outside the backed-up paths')
  t.equal(problem(entry('./srv/shop/uploads/l', 'symlink', '/etc')), 'is a symlink to an absolute path (/etc)')
  t.equal(problem(entry('./srv/shop/uploads/a/l', 'symlink', '../../x')), 'is a symlink out of /srv/shop/uploads (../../x)')
  t.equal(problem(entry('./srv/shop/uploads/l', 'symlink', '..')), 'is a symlink out of /srv/shop/uploads (..)')
  t.equal(problem(entry('./srv/shop/uploads', 'symlink', 'elsewhere')), 'is a symlink in place of a backed-up path')
  t.equal(
    problem(entry('./srv/shop/uploads/h', 'hardlink', './etc/shadow')),
    'is a hard link to a file outside /srv/shop/uploads (./etc/shadow)',
  )
  t.equal(
    problem(entry('./srv/shop/uploads/h', 'hardlink', './srv/shop/config.yaml')),
    'is a hard link to a file outside /srv/shop/uploads (./srv/shop/config.yaml)',
  )
  t.equal(problem(entry('./srv/shop/uploads/sda', 'device', '', '4')), 'is a device file')
  t.equal(problem(entry('./srv/shop/uploads/p', 'fifo', '', '6')), 'is a fifo')
  t.equal(problem(entry('./srv/shop/uploads/s', 'other', '', 'S')), 'has an unsupported type "S"')
})

t.test('planFiles: only paths the env still lists are restored', async (t) => {
  t.same(planFiles(['/srv/a', '/srv/b/'], ['/srv/b', '/srv/c']), { restore: ['/srv/b'], skipped: ['/srv/a'] })
})

t.test('swapSides: a swap failing half-way swaps back what it swapped; the files are as they were', async (t) => {
  const dir = await tempDir(t)
  const [a, b] = sidePaths([join(dir, 'a'), join(dir, 'b')], 'r1') as [SidePath, SidePath]
  await writeFile(a.path, 'live a')
  await writeFile(a.side, 'restored a')
  await writeFile(b.path, 'live b') // b's side path is missing: its swap fails
  await t.rejects(swapSides([a, b]), { code: 'ENOENT' })
  t.equal(await readFile(a.path, 'utf8'), 'live a')
  t.equal(await readFile(b.path, 'utf8'), 'live b')
  t.same((await readdir(dir)).sort(), ['a', 'b'], 'no side or old path left')
})

t.test('swapProblems: a mount point cannot be swapped; a writable directory can', async (t) => {
  const dir = await tempDir(t)
  t.same(await swapProblems([join(dir, 'uploads'), join(dir, 'missing', 'deeper', 'uploads')]), [])
  t.same(await swapProblems(['/proc']), ['/proc is a mount point and cannot be swapped'])
})
