/**
 * The hosting-server harness on its own: two servers (network + mount namespaces) and a database
 * host on one bridge. The origin runs nginx + php8.2-fpm with WordPress, the notes app and a
 * static site on its shared IP; the target runs Apache 2.4 (mpm_event, proxy_fcgi) + php8.2-fpm
 * with the same WordPress (same database) and the notes app. Asserted: both serve WordPress over
 * HTTP and HTTPS (each site's own certificate, checked by fingerprint) from the shared MariaDB;
 * each server's /etc and /var are its own (invisible to the other and to this machine); the load
 * (pages, comments, uploads, notes; HTTP and HTTPS; keep-alive and new connections) sees no
 * failure and every acknowledged write lands once; the PHP-FPM access log names the requests;
 * `close()` leaves no process, mount or folder behind.
 * Root only (CI runs as root).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { NET, netnsSkipReason } from './topology.js';
import {
  TestCa,
  configureApacheEvent,
  nginxProcesses,
  run,
  startApache,
  startMariaDb,
  startNginx,
  startPhpFpm,
  withServers,
} from './server-ns.js';
import {
  commentCounts,
  installNotes,
  installStatic,
  installWordPress,
  installWordPressDb,
  nameServer,
  noteCounts,
  phpRequests,
  servedFingerprint,
  siteLayout,
  startSiteLoad,
  uploadCounts,
  wpSalts,
} from './sites.js';

const ROOT = process.cwd();
const skip = netnsSkipReason({
  iproute2: ['ip'],
  'util-linux': ['nsenter'],
  'nginx-light': ['nginx'],
  'php8.2-fpm': ['php-fpm8.2'],
  apache2: ['apache2'],
  'mariadb-server': ['mariadbd'],
  wordpress: ['wp-setup'],
  curl: ['curl'],
  openssl: ['openssl'],
});
if (skip) console.log(`# skipping the hosting-server harness test: ${skip}`);

test(
  'two hosting servers in namespaces serve WordPress from one MariaDB over HTTP and HTTPS, each with its own /etc and /var',
  { skip: skip ?? false, timeout: 240_000 },
  async () => {
    await withServers('harness', { db: true }, async ({ topo, dir, open, servers }) => {
      const db = await open('db');
      const maria = await startMariaDb(db, NET.db);
      const wpDb = { host: NET.db, name: 'wp_blog', user: 'blog', password: 'blog-db-pw' };
      await maria.createDatabase(wpDb.name, wpDb.user, wpDb.password);

      const ca = await TestCa.create(join(dir, 'ca'));
      const blog = siteLayout('blog.example', 'wordpress', 'blog');
      const notes = siteLayout('notes.example', 'notes', 'notes');
      const stat = siteLayout('static.example', 'static', 'static');
      const certs = {
        blog: await ca.issue(blog.names),
        notes: await ca.issue(notes.names),
        stat: await ca.issue(stat.names),
      };
      const salts = wpSalts();

      const origin = await open('origin');
      await nameServer(origin, 'origin');
      await installWordPress(origin, 'nginx', blog, {
        address: NET.origin,
        cert: certs.blog,
        db: wpDb,
        salts,
      });
      await installNotes(origin, 'nginx', notes, { address: NET.origin, cert: certs.notes });
      await installStatic(origin, 'nginx', stat, { address: NET.origin, cert: certs.stat });
      await startPhpFpm(origin);
      await startNginx(origin);
      await installWordPressDb(origin, blog, NET.origin, 'Harness blog');

      const target = await open('target');
      await nameServer(target, 'target');
      await configureApacheEvent(target);
      await installWordPress(target, 'apache', blog, {
        address: NET.target,
        cert: certs.blog,
        db: wpDb,
        salts,
      });
      await installNotes(target, 'apache', notes, { address: NET.target, cert: certs.notes });
      await startPhpFpm(target);
      await startApache(target);
      const modules = (await target.exec('apache2ctl', ['-M'])).stdout;
      assert.match(modules, /mpm_event_module/, 'Apache runs mpm_event');
      assert.match(modules, /proxy_fcgi_module/);
      assert.doesNotMatch(modules, /php_module|mpm_prefork/, 'no mod_php in the server');

      // WordPress over HTTP and HTTPS on both servers, from the one database.
      const caFile = join(ca.dir, 'ca.pem');
      const curl = async (url: string, address: string, domain: string) => {
        const port = url.startsWith('https') ? 443 : 80;
        const r = await run([
          'ip',
          'netns',
          'exec',
          topo.ns.client,
          'curl',
          '-sS',
          '--max-time',
          '30',
          '--cacert',
          caFile,
          '--resolve',
          `${domain}:${port}:${address}`,
          '-D',
          '-',
          url,
        ]);
        return r.stdout;
      };
      for (const [address, name] of [
        [NET.origin, 'origin'],
        [NET.target, 'target'],
      ] as const) {
        for (const scheme of ['http', 'https']) {
          const page = await curl(`${scheme}://blog.example/?p=1`, address, 'blog.example');
          assert.match(page, /^HTTP\/1\.1 200/, `${name} ${scheme}: ${page.slice(0, 200)}`);
          assert.match(page, new RegExp(`x-test-server: ${name}`, 'i'), `${name} ran the PHP`);
          assert.match(page, /Harness blog/, `${name} ${scheme}: the blog from the shared database`);
        }
        assert.equal(
          await servedFingerprint(topo.ns.client, address, 'blog.example'),
          certs.blog.fingerprint256,
          `${name} serves blog.example's own certificate`,
        );
        assert.equal(
          await servedFingerprint(topo.ns.client, address, 'notes.example'),
          certs.notes.fingerprint256,
          `${name} serves notes.example's own certificate`,
        );
      }
      assert.match(
        await curl('https://static.example/about.html', NET.origin, 'static.example'),
        /A static site/,
      );
      assert.equal(
        await servedFingerprint(topo.ns.client, NET.origin, 'static.example'),
        certs.stat.fingerprint256,
      );

      // Each server's /etc and /var are its own.
      await origin.writeFile('/var/www/only-on-origin.txt', 'origin\n');
      assert.equal(
        await target.exists('/var/www/only-on-origin.txt'),
        false,
        "the target does not see the origin's /var",
      );
      assert.equal(
        existsSync('/var/www/only-on-origin.txt'),
        false,
        "this machine does not see the origin's /var",
      );
      assert.equal(
        await target.exists('/var/www/static.example'),
        false,
        'the static site is only on the origin',
      );
      assert.equal(await origin.exists('/etc/apache2/sites-enabled/blog.example.conf'), false);
      assert.match(await origin.readText('/etc/passwd'), /^blog:/m, 'the site user exists on the origin');
      assert.doesNotMatch(
        readFileSync('/etc/passwd', 'utf8'),
        /^blog:/m,
        "not in this machine's /etc/passwd",
      );
      assert.equal(existsSync('/etc/nginx/sites-enabled/blog.example.conf'), false);
      const owner = (
        await origin.exec('stat', ['-c', '%U:%G %a', `${blog.htdocs}/wp-config.php`])
      ).stdout.trim();
      assert.equal(owner, 'blog:blog 640', 'the site user owns its files');
      assert.equal(
        (await origin.exec('stat', ['-c', '%U %a', blog.keyFile])).stdout.trim(),
        'root 600',
        'the key is root-only',
      );
      const wpFiles = Number(
        (await origin.exec('sh', ['-c', `find ${blog.htdocs} -type l | wc -l`])).stdout.trim(),
      );
      assert.equal(wpFiles, 0, "Debian's symlinks are dereferenced in the copy");

      // Load on the origin: pages, comments, uploads, notes; no failure, every acknowledged write once.
      const nginxBefore = await nginxProcesses(origin);
      const load = await startSiteLoad(
        topo,
        ROOT,
        {
          sites: [
            { domain: blog.domain, kind: 'wordpress' },
            { domain: notes.domain, kind: 'notes' },
            { domain: stat.domain, kind: 'static' },
          ],
          addresses: { [blog.domain]: NET.origin, [notes.domain]: NET.origin, [stat.domain]: NET.origin },
          clientsPerSite: 2,
          staleShare: 0,
          staleOverstayMs: 0,
          keepAliveShare: 0.5,
          intervalMs: 150,
          durationMs: 6000,
          maxRequestsPerClient: 40,
          requestTimeoutMs: 10_000,
          commentShare: 0.2,
          uploadShare: 0.2,
          noteShare: 0.5,
          caPem: ca.certPem,
        },
        join(dir, 'load.log'),
      );
      const { results, summary } = await load.finish();
      const failures = results.filter((r) => !r.ok);
      assert.equal(failures.length, 0, `failed requests: ${JSON.stringify(failures.slice(0, 5))}`);
      assert.equal(summary.unexpected, 0, 'every write acknowledged, no 4xx');
      assert.ok(results.length >= 60, `enough requests (${results.length})`);
      for (const scheme of ['http', 'https'] as const)
        for (const keepAlive of [true, false])
          assert.ok(
            results.some((r) => r.scheme === scheme && r.keepAlive === keepAlive && r.domain === blog.domain),
            `WordPress loaded over ${scheme}, keep-alive ${keepAlive}`,
          );
      assert.ok(summary.comments.length > 0 && summary.uploads.length > 0 && summary.notes.length > 0);
      const inDb = await commentCounts(maria.sql, wpDb.name);
      for (const c of summary.comments)
        assert.equal(inDb.get(c.key), 1, `comment ${c.key} once in the database`);
      const files = await uploadCounts(origin, blog);
      for (const u of summary.uploads)
        assert.equal(files.get(u.key), 1, `upload ${u.key} once on the origin`);
      const notesOn = await noteCounts(origin, notes);
      for (const n of summary.notes) assert.equal(notesOn.get(n.key), 1, `note ${n.key} once on the origin`);
      // The pool's access log names every PHP request of the site (by its r= id).
      const logged = (await phpRequests(origin, blog)).map((r) => /[?&]r=([\w-]+)/.exec(r.uri)?.[1]);
      const blogIds = results.filter((r) => r.domain === blog.domain).map((r) => r.id);
      assert.deepEqual(
        blogIds.filter((id) => !logged.includes(id)),
        [],
        "every request to WordPress is in the origin's PHP-FPM access log",
      );
      assert.deepEqual(await nginxProcesses(origin), nginxBefore, 'nginx was not reloaded meanwhile');
      assert.equal((await target.exec('ls', ['-A', `${blog.htdocs}/wp-content/uploads/ferry`])).stdout, '');
      console.log(
        `# harness: ${results.length} requests, ${summary.comments.length} comments, ${summary.uploads.length} uploads, ${summary.notes.length} notes, 0 failed`,
      );

      // close() leaves nothing behind.
      const dirs = servers.map((s) => s.dir);
      for (const s of servers) s.close();
      for (const s of servers) assert.deepEqual(s.leftovers(), [], `${s.name}: nothing left`);
      for (const d of dirs) assert.equal(existsSync(d), false);
      const mounts = execFileSync('cat', ['/proc/self/mountinfo'], { encoding: 'utf8' });
      assert.doesNotMatch(
        mounts,
        /ferry-(origin|target|db)|ferry-run/,
        'no mount of the servers on this machine',
      );
    });
  },
);
