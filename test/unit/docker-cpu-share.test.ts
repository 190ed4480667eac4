// The start-up warning for an engine whose containers all share one host process's CPU weight.
import { writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import t from 'tap'
import { containerCpuShareWarning } from '../../agent/docker/cpu-share.js'
import { tempDir } from '../helpers/tmp.js'

const engine = (driver: string, version: string) => ({ cgroupLayout: async () => ({ driver, version }) })

t.test('containerCpuShareWarning: only cgroupfs on cgroup v1 with /docker at one process weight is warned about', async (t) => {
  const dir = await tempDir(t)
  const shares = join(dir, 'cpu.shares')
  await writeFile(shares, '1024\n')
  t.match(
    await containerCpuShareWarning(engine('cgroupfs', '1'), shares),
    /all containers share one CPU weight \(.*cpu\.shares is 1024.*echo 10240 >/,
  )
  t.equal(await containerCpuShareWarning(engine('systemd', '1'), shares), null, 'the systemd driver gives each container its own scope')
  t.equal(await containerCpuShareWarning(engine('cgroupfs', '2'), shares), null, 'cgroup v2')
  await writeFile(shares, '10240\n')
  t.equal(await containerCpuShareWarning(engine('cgroupfs', '1'), shares), null, 'an operator who raised it is not nagged')
  t.equal(await containerCpuShareWarning(engine('cgroupfs', '1'), join(dir, 'missing')), null, 'unknown is not warned about')
})
