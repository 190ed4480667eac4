import { readFile } from 'node:fs/promises'
import { join } from 'node:path'
import t from 'tap'
import { MANAGED_HEADER, NginxUpstream } from '../../agent/proxy/nginx.js'
import { tempDir } from '../helpers/tmp.js'

const several = (upstreamFile = '/nonexistent/upstream.conf') =>
  new NginxUpstream({
    upstreamFile,
    upstreamName: 'shop_production',
    upstreams: [
      { name: 'shop_production_api', ports: [18011, 18012] },
      { name: 'shop_production_frontend', ports: [18021, 18022] },
    ],
    testCommand: ['true'],
    reloadCommand: ['true'],
  })

t.test('NginxUpstream: several upstreams are written from one slot, named by the primary’s port', async (t) => {
  const nginx = several()
  t.equal(
    nginx.render(18012),
    `${MANAGED_HEADER}\nupstream shop_production_api { server 127.0.0.1:18012; }\nupstream shop_production_frontend { server 127.0.0.1:18022; }\n`,
  )
  t.equal(nginx.parse(nginx.render(18012)), 18012)
  t.equal(nginx.parse(nginx.render(18011)), 18011)
  t.throws(() => nginx.render(18021), { code: 'proxy_invalid_port' }, 'a port outside the primary pair names no slot')
})

t.test('NginxUpstream: a file of several upstreams that disagree answers the primary’s port; a missing one is not ours', async (t) => {
  const nginx = several()
  const mixed = 'upstream shop_production_api { server 127.0.0.1:18011; }\nupstream shop_production_frontend { server 127.0.0.1:18022; }\n'
  t.equal(nginx.parse(mixed), 18011)
  t.equal(nginx.parse('upstream shop_production_api { server 127.0.0.1:18011; }\n'), null)
  t.equal(nginx.parse('upstream shop_production_frontend { server 127.0.0.1:18021; }\nupstream x { server 127.0.0.1:18011; }\n'), null)
  t.equal(nginx.parse(`${nginx.render(18011)}junk;\n`), null)
})

t.test('NginxUpstream: one upstream keeps its format byte for byte', async (t) => {
  const one = new NginxUpstream({ upstreamFile: '/x', upstreamName: 'shop_production', testCommand: ['true'], reloadCommand: ['true'] })
  t.equal(one.render(18001), `${MANAGED_HEADER}\nupstream shop_production { server 127.0.0.1:18001; }\n`)
  t.equal(one.parse(one.render(18001)), 18001)
  t.equal(one.parse('upstream other { server 127.0.0.1:18001; }\n'), null)
})

t.test('NginxUpstream: the placeholder and the switch write every upstream', async (t) => {
  const dir = await tempDir(t)
  const file = join(dir, 'up.conf')
  const nginx = several(file)
  t.equal(await nginx.ensureFile(18011), true)
  const placeholder = await readFile(file, 'utf8')
  t.match(placeholder, /upstream shop_production_api \{ server 127\.0\.0\.1:18011 down; \}/)
  t.match(placeholder, /upstream shop_production_frontend \{ server 127\.0\.0\.1:18021 down; \}/)
  t.equal(await nginx.currentPort(), null)
  t.same(await nginx.switchTo(18012), { previousPort: null })
  t.equal(await nginx.currentPort(), 18012)
  t.equal(await readFile(file, 'utf8'), nginx.render(18012))
})

t.test('NginxUpstream: a placement lists every address serving a port (a swarm: one server per node)', async (t) => {
  const nginx = several()
  const placement = new Map([
    [18012, ['127.0.0.1', '10.77.0.2']],
    [18022, ['10.77.0.2']],
  ])
  t.equal(
    nginx.render(18012, placement),
    `${MANAGED_HEADER}\nupstream shop_production_api { server 127.0.0.1:18012; server 10.77.0.2:18012; }\nupstream shop_production_frontend { server 10.77.0.2:18022; }\n`,
  )
  t.equal(nginx.parse(nginx.render(18012, placement)), 18012, 'the file written for several nodes is read back')
  t.equal(
    nginx.parse(
      'upstream shop_production_api { server 10.0.0.1:18011; server 10.0.0.2:18012; }\nupstream shop_production_frontend { server 127.0.0.1:18021; }\n',
    ),
    null,
    'servers of one upstream on two ports: not ours',
  )
  t.throws(() => nginx.render(18012, new Map([[18012, []]])), { code: 'proxy_invalid_port', message: /no address serves port 18012/ })
  t.throws(() => nginx.render(18012, new Map([[18012, ['evil; include /etc/passwd']]])), {
    code: 'proxy_invalid_port',
    message: /not an IPv4 address/,
  })
})

t.test('NginxUpstream: a warm standby is every upstream’s backup, the new release’s servers never marked failed', async (t) => {
  const one = new NginxUpstream({ upstreamFile: '/x', upstreamName: 'shop_production', testCommand: ['true'], reloadCommand: ['true'] })
  const file = one.render(18002, undefined, { port: 18001 })
  t.equal(file, `${MANAGED_HEADER}\nupstream shop_production { server 127.0.0.1:18002 max_fails=0; server 127.0.0.1:18001 backup; }\n`)
  t.equal(one.parse(file), 18002, 'the primary is live; the backup line names no port')
  t.throws(() => one.render(18002, undefined, { port: 18002 }), { code: 'proxy_invalid_port', message: /standby/ })
  t.throws(() => one.render(18002, undefined, { port: 0 }), { code: 'proxy_invalid_port' })

  const nginx = several()
  const pair = nginx.render(18012, undefined, { port: 18011 })
  t.equal(
    pair,
    `${MANAGED_HEADER}\nupstream shop_production_api { server 127.0.0.1:18012 max_fails=0; server 127.0.0.1:18011 backup; }\n` +
      `upstream shop_production_frontend { server 127.0.0.1:18022 max_fails=0; server 127.0.0.1:18021 backup; }\n`,
    'each upstream gets its own pair’s other port',
  )
  t.equal(nginx.parse(pair), 18012)
  t.equal(nginx.parse(nginx.render(18011, undefined, { port: 18012 })), 18011)
  t.throws(() => nginx.render(18012, undefined, { port: 18021 }), { code: 'proxy_invalid_port' }, 'not the primary’s pair')
  t.throws(() => nginx.render(18012, undefined, { port: 18012 }), { code: 'proxy_invalid_port' }, 'the same slot')
})

t.test('NginxUpstream: a swarm standby lists a backup server per node; a standby with no address gets no backup line', async (t) => {
  const nginx = several()
  const live = new Map([
    [18012, ['127.0.0.1', '10.77.0.2']],
    [18022, ['10.77.0.2']],
  ])
  const standby = new Map([
    [18011, ['10.77.0.2', '10.77.0.3']],
    [18021, []],
  ])
  const file = nginx.render(18012, live, { port: 18011, placement: standby })
  t.equal(
    file,
    `${MANAGED_HEADER}\nupstream shop_production_api { server 127.0.0.1:18012 max_fails=0; server 10.77.0.2:18012 max_fails=0; ` +
      `server 10.77.0.2:18011 backup; server 10.77.0.3:18011 backup; }\n` +
      `upstream shop_production_frontend { server 10.77.0.2:18022 max_fails=0; }\n`,
  )
  t.equal(nginx.parse(file), 18012)
  t.throws(() => nginx.render(18012, live, { port: 18011, placement: new Map([[18011, ['x; include /etc/passwd']]]) }), {
    code: 'proxy_invalid_port',
    message: /not an IPv4 address/,
  })
})

t.test('NginxUpstream: a file with a backup is read only in the shape render writes; anything else is not ours', async (t) => {
  const one = new NginxUpstream({ upstreamFile: '/x', upstreamName: 'app', testCommand: ['true'], reloadCommand: ['true'] })
  const parse = (servers: string) => one.parse(`upstream app { ${servers} }\n`)
  t.equal(parse('server 127.0.0.1:2 max_fails=0; server 127.0.0.1:1 backup;'), 2)
  t.equal(parse('server 127.0.0.1:2; server 127.0.0.1:1 backup;'), 2, 'a primary without max_fails=0')
  t.equal(parse('server 127.0.0.1:1 backup; server 127.0.0.1:2 max_fails=0;'), 2, 'the backup first')
  t.equal(parse('server 127.0.0.1:2 max_fails=0;'), 2)
  t.equal(parse('server 127.0.0.1:1 backup;'), null, 'no primary')
  t.equal(
    parse('server 127.0.0.1:2 max_fails=0; server 127.0.0.1:3 max_fails=0; server 127.0.0.1:1 backup;'),
    null,
    'two primaries on two ports',
  )
  t.equal(parse('server 127.0.0.1:2 max_fails=3; server 127.0.0.1:1 backup;'), null, 'another max_fails')
  t.equal(parse('server 127.0.0.1:2 weight=5; server 127.0.0.1:1 backup;'), null)
  t.equal(parse('server 127.0.0.1:2; server 127.0.0.1:1 backup down;'), null)
  t.equal(parse('server 127.0.0.1:2; server 127.0.0.1:1 backupx;'), null)
  t.equal(parse('server 127.0.0.1:2 max_fails=0backup;'), null)
  t.equal(parse('server 127.0.0.1:2; server example.com:1 backup;'), null, 'a host name')
  t.equal(parse('server 127.0.0.1:2; server 127.0.0.1:1 backup; include /etc/passwd;'), null)
  t.equal(parse('server 127.0.0.1:2 down;'), null, 'the placeholder names no live port')
})

t.test('NginxUpstream: switchTo with a standby writes it, and a failed switch puts the file back byte for byte', async (t) => {
  const dir = await tempDir(t)
  const file = join(dir, 'up.conf')
  const ok = new NginxUpstream({ upstreamFile: file, upstreamName: 'app', testCommand: ['true'], reloadCommand: ['true'] })
  t.same(await ok.switchTo(18001), { previousPort: null })
  t.same(await ok.switchTo(18002, undefined, { port: 18001 }), { previousPort: 18001 })
  const standing = await readFile(file, 'utf8')
  t.equal(standing, ok.render(18002, undefined, { port: 18001 }))
  t.equal(await ok.currentPort(), 18002)
  const failing = new NginxUpstream({ upstreamFile: file, upstreamName: 'app', testCommand: ['false'], reloadCommand: ['true'] })
  await t.rejects(failing.switchTo(18001), { code: 'proxy_test_failed' })
  t.equal(await readFile(file, 'utf8'), standing, 'the file with the backup line is back as it was')
  t.same(await ok.switchTo(18002), { previousPort: 18002 }, 'the end of the window: the new release alone')
  t.equal(await readFile(file, 'utf8'), ok.render(18002))
})
