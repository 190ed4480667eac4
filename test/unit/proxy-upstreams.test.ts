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
