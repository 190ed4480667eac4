import { readdir, readFile, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import t from 'tap'
import { placeEntry, planFiles, sidePaths, swapProblems, swapSides, type SidePath } from '../../agent/backup/files-restore.js'
import { gzipSync } from 'node:zlib'
import { readTarGz, type TarEntry } from '../../agent/backup/tar-reader.js'
import { paxRecord, tar } from '../helpers/tar.js'
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

t.test('readTarGz: pax names, bodies across blocks; a truncated or corrupt archive throws', async (t) => {
  const dir = await tempDir(t)
  const big = Buffer.alloc(70_000, 'x')
  const long = `./srv/${'deep/'.repeat(30)}file.txt`
  const entries = async (bytes: Buffer) => {
    await writeFile(join(dir, 'a.tar.gz'), bytes)
    const out: [string, string, number][] = []
    for await (const { entry, body } of readTarGz(join(dir, 'a.tar.gz'))) {
      let size = 0
      if (entry.name.endsWith('big.bin')) for await (const chunk of body()) size += chunk.length
      out.push([entry.name, entry.type, size])
    }
    return out
  }
  const good = tar([
    { name: './srv/', type: '5' },
    { name: 'PaxHeaders/x', type: 'x', body: paxRecord('path', long) },
    { name: 'cut-to-100-bytes', body: 'pax' },
    { name: './srv/big.bin', body: big },
    { name: './srv/after', body: 'after' },
  ])
  t.same(await entries(gzipSync(good)), [
    ['./srv/', 'dir', 0],
    [long, 'file', 0],
    ['./srv/big.bin', 'file', big.length],
    ['./srv/after', 'file', 0],
  ])
  await t.rejects(entries(gzipSync(good.subarray(0, 40_000))), /truncated/)
  await t.rejects(entries(gzipSync(good.subarray(0, good.length - 1024))), /end marker/)
  const corrupt = Buffer.from(good)
  corrupt[0] = 0x41
  await t.rejects(entries(gzipSync(corrupt)), /bad checksum/)
})
