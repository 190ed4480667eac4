import { spawn } from 'node:child_process'
import { once } from 'node:events'
import { readdir, readFile, utimes, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import t from 'tap'
import { BackupLocks, lockFileName, processAlive } from '../../agent/backup/lock.js'

async function deadPid(): Promise<number> {
  const child = spawn(process.execPath, ['-e', ''])
  await once(child, 'exit')
  return child.pid as number
}

t.test('BackupLocks: a second acquire of the same app+env is busy until the first is released', async (t) => {
  const dir = t.testdir()
  const locks = new BackupLocks()
  const release = await locks.acquire(dir, 'app', 'prod')
  t.equal(await readFile(join(dir, lockFileName('app', 'prod')), 'utf8'), `${process.pid}\n`)
  await t.rejects(locks.acquire(dir, 'app', 'prod'), { code: 'backup_busy', statusCode: 409 })
  const other = await locks.acquire(dir, 'app', 'staging')
  t.ok(await locks.isLocked(dir, 'app', 'prod'))
  await release()
  await release() // twice is harmless
  t.notOk(await locks.isLocked(dir, 'app', 'prod'))
  t.same(await readdir(dir), [lockFileName('app', 'staging')])
  const again = await locks.acquire(dir, 'app', 'prod')
  await again()
  await other()
  t.same(await readdir(dir), [])
})

t.test('BackupLocks: concurrent acquires in one process: exactly one wins', async (t) => {
  const dir = t.testdir()
  const locks = new BackupLocks()
  const results = await Promise.allSettled([locks.acquire(dir, 'app', 'prod'), locks.acquire(dir, 'app', 'prod')])
  t.equal(results.filter((r) => r.status === 'fulfilled').length, 1)
  t.match(
    results.find((r) => r.status === 'rejected'),
    { reason: { code: 'backup_busy' } },
  )
})

t.test('BackupLocks: with waitMs an acquire waits for the holder to release, and is busy once the wait runs out', async (t) => {
  const dir = t.testdir()
  const locks = new BackupLocks()
  const release = await locks.acquire(dir, 'app', 'prod')
  let waits = 0
  const waiting = locks.acquire(dir, 'app', 'prod', { waitMs: 10_000, onWait: () => waits++ })
  await new Promise((r) => setTimeout(r, 700))
  await release()
  const second = await waiting
  t.equal(waits, 1, 'the wait is announced once')
  t.equal(await readFile(join(dir, lockFileName('app', 'prod')), 'utf8'), `${process.pid}\n`, 'the waiter holds the lock')
  const started = Date.now()
  await t.rejects(locks.acquire(dir, 'app', 'prod', { waitMs: 300 }), { code: 'backup_busy' })
  t.ok(Date.now() - started >= 300, 'it waited before giving up')
  await second()
})

t.test('BackupLocks: a lock file of a live process is busy', async (t) => {
  const dir = t.testdir()
  const child = spawn('sleep', ['30'])
  t.teardown(() => void child.kill())
  await writeFile(join(dir, lockFileName('app', 'prod')), `${child.pid}\n`)
  t.ok(processAlive(child.pid as number))
  await t.rejects(new BackupLocks().acquire(dir, 'app', 'prod'), { code: 'backup_busy', message: new RegExp(`pid ${child.pid}`) })
  t.ok(await new BackupLocks().isLocked(dir, 'app', 'prod'))
})

t.test('BackupLocks: a lock file of a dead process, or of an earlier process with our pid, is taken over', async (t) => {
  const dir = t.testdir()
  const path = join(dir, lockFileName('app', 'prod'))
  const pid = await deadPid()
  t.notOk(processAlive(pid))
  await writeFile(path, `${pid}\n`)
  const release = await new BackupLocks().acquire(dir, 'app', 'prod')
  t.equal(await readFile(path, 'utf8'), `${process.pid}\n`)
  await release()
  await writeFile(path, `${process.pid}\n`) // as a container's pid 1 would leave it
  await (
    await new BackupLocks().acquire(dir, 'app', 'prod')
  )()
  t.same(await readdir(dir), [])
})

t.test('BackupLocks: an unreadable lock file is busy while young, stale when old', async (t) => {
  const dir = t.testdir()
  const path = join(dir, lockFileName('app', 'prod'))
  await writeFile(path, 'garbage')
  await t.rejects(new BackupLocks().acquire(dir, 'app', 'prod'), { code: 'backup_busy' })
  const old = new Date(Date.now() - 60_000)
  await utimes(path, old, old)
  await (
    await new BackupLocks().acquire(dir, 'app', 'prod')
  )()
})
