/**
 * Planning the move of a web site (an nginx or Apache virtual host of the origin's own web server):
 * what the origin's agent reads of it, what the operator's overrides add, whether the target can
 * take it, and the preflight checks it gets. Everything here only reads; a refusal changes nothing.
 */
import { posix } from 'node:path';
import type { SiteMail, SiteNeeds, SourceRef, WebSite } from '../agent/webconfig/model.js';
import { FerryError, isFerryError } from '../common/errors.js';
import type { HostDriver, WebSiteOverrides } from './ports.js';
import { type HttpCheck, type ParityChecks, type WebPlan } from './types.js';

/** One reason a site cannot be moved: a stable code, a sentence, and where it was read. */
export interface SiteRefusal {
  code: string;
  message: string;
  at?: SourceRef;
}

/** What planning learnt of a movable web site. */
export interface WebSitePlan {
  site: WebSite;
  /** The site's listen ports, plain ones first (the temporary IP carries them all). */
  ports: number[];
  tlsPort?: number;
  /** The domain's mail, when it has some on the origin and it moves (not `mail: false`). */
  mail?: SiteMail;
}

const bare = (d: string) => d.toLowerCase().replace(/\.$/, '');

function inside(path: string, dir: string): boolean {
  const p = posix.normalize(path);
  const d = posix.normalize(dir).replace(/\/+$/, '') || '/';
  return p === d || p.startsWith(d === '/' ? '/' : `${d}/`);
}

/** `CODE: message (file:line)`, one per refusal. */
export function describeRefusals(refusals: SiteRefusal[]): string {
  return refusals
    .map((r) => `  ${r.code}: ${r.message}${r.at ? ` (${r.at.file}:${r.at.line})` : ''}`)
    .join('\n');
}

/**
 * The site's refusals, with the operator's overrides applied: `declaredRoots` replaces the agent's
 * roots check (every path must lie inside one of them), `dataDir` must hold every path.
 */
export function refusalsOf(site: WebSite, overrides: WebSiteOverrides = {}): SiteRefusal[] {
  const out: SiteRefusal[] = site.refusals.filter(
    (r) => !(overrides.declaredRoots && r.code === 'PATH_OUTSIDE_ROOTS'),
  );
  const roots = overrides.declaredRoots;
  if (roots) {
    for (const p of site.paths) {
      if (!roots.some((r) => inside(p.path, r)))
        out.push({
          code: 'PATH_OUTSIDE_ROOTS',
          message: `${p.directive} ${p.path} is outside every declared root (${roots.join(', ')})`,
          at: p.at,
        });
    }
  }
  const dataDir = overrides.dataDir;
  if (dataDir) {
    for (const p of site.paths) {
      if (!inside(p.path, dataDir))
        out.push({
          code: 'PATH_OUTSIDE_DATA_DIR',
          message: `${p.directive} ${p.path} is outside the site's declared data directory ${dataDir}`,
          at: p.at,
        });
    }
  }
  return out;
}

/**
 * Ask the origin for the site and the target whether it can take it. Throws `WEB_SITE_NOT_FOUND`,
 * `SITE_NOT_MOVABLE` (every refusal with its file and line), `TARGET_LACKS` or
 * `PLAN_TARGET_HAS_SITE`; calls only reading methods.
 */
export async function planWebSite(
  origin: HostDriver,
  target: HostDriver,
  domain: string,
  overrides: WebSiteOverrides = {},
): Promise<WebSitePlan> {
  const name = bare(domain);
  const hasOverrides =
    overrides.declaredRoots !== undefined || overrides.dataDir !== undefined || overrides.mail !== undefined;
  const notFound = () =>
    new FerryError('WEB_SITE_NOT_FOUND', `the web server of origin ${origin.id} has no site named ${name}`);
  const refuse = (at: SourceRef, refusals: SiteRefusal[]) =>
    new FerryError(
      'SITE_NOT_MOVABLE',
      `${name} on ${origin.id} (${at.file}:${at.line}) cannot be moved; nothing was changed:\n${describeRefusals(refusals)}`,
    );
  for (const h of [origin, target])
    if (h.plainTransport)
      throw new FerryError(
        'SECRETS_NEED_TLS',
        `${name} cannot move from ${origin.id} to ${target.id}: the agent of ${h.id} is reached over plain HTTP (${h.plainTransport}), and the move carries the site's private keys and configs. Serve its API over HTTPS (ferry agent --tls-cert and --tls-key; https:// and ca: in ferry.yaml); nothing was changed`,
      );
  // First the web server's own report, which any agent with --web-config gives: every block that
  // names the site, each with its refusals.
  let site: WebSite | null = null;
  if (origin.webSites) {
    const blocks = (await origin.webSites()).sites.filter((s) => s.names.some((n) => bare(n) === name));
    if (!blocks.length) throw notFound();
    const refusals = blocks.flatMap((b) => refusalsOf(b, overrides));
    if (refusals.length) throw refuse(blocks[0]!.at, refusals);
    site = blocks[0]!;
  }
  // Then the agent's view of the site as it would move it (its blocks merged, its data directory).
  if (origin.inspectWebSite) {
    site = await (hasOverrides ? origin.inspectWebSite(name, overrides) : origin.inspectWebSite(name));
    if (!site) throw notFound();
    const refusals = refusalsOf(site, overrides);
    if (refusals.length) throw refuse(site.at, refusals);
  }
  if (!site) throw new FerryError('WEBCONFIG_NONE', `origin ${origin.id} cannot read its web server's sites`);
  if (!origin.gateWebSite || !origin.exportWebSite || !origin.finishWebSite)
    throw new FerryError(
      'WEBCONFIG_NONE',
      `origin ${origin.id} cannot move web sites: its agent has no gate for them (an older version)`,
    );
  if (!target.installWebSite)
    throw new FerryError(
      'TARGET_LACKS',
      `target ${target.id} cannot take web sites: its agent has no web-site support`,
    );
  if (target.webSites) {
    let report;
    try {
      report = await target.webSites();
    } catch (err) {
      if (!isFerryError(err, 'WEBCONFIG_NONE')) throw err;
      throw new FerryError(
        'TARGET_LACKS',
        `target ${target.id} has no web server for Ferry (start its agent with --web-config ${site.server})`,
        { cause: err },
      );
    }
    if (report.server !== site.server)
      throw new FerryError(
        'TARGET_LACKS',
        `${name} runs on ${site.server}, but target ${target.id} runs ${report.server}`,
      );
    const there = report.sites.find((s) => s.names.some((n) => bare(n) === name));
    if (there)
      throw new FerryError(
        'PLAN_TARGET_HAS_SITE',
        `the web server of target ${target.id} serves ${name} already (${there.at.file}:${there.at.line}); remove it there first`,
      );
  }
  // The target's own check of what the site needs (PHP-FPM versions, Apache modules, and Postfix
  // and Dovecot free for the domain when its mail moves), the one its install runs.
  const mail = overrides.mail === false ? undefined : site.mail;
  if (target.checkWebSite) {
    const needs: SiteNeeds = {
      server: site.server,
      requires: site.requires ?? [],
      ...(mail ? { mailDomain: mail.domain } : {}),
    };
    try {
      await target.checkWebSite(name, needs);
    } catch (err) {
      if (isFerryError(err, 'TARGET_LACKS'))
        throw new FerryError('TARGET_LACKS', `${err.message} (target ${target.id}); nothing was changed`, {
          cause: err,
        });
      // An older agent has no such route; its install checks the same before changing anything.
      if (!isFerryError(err, 'ROUTE_NOT_FOUND')) throw err;
    }
  }
  return plan(site, mail);
}

/** The ports and TLS port of a movable site. */
function plan(site: WebSite, mail: SiteMail | undefined): WebSitePlan {
  const plain = [...new Set(site.listens.filter((l) => !l.tls).map((l) => l.port))];
  const tls = [...new Set(site.listens.filter((l) => l.tls).map((l) => l.port))];
  return {
    site,
    ports: [...plain, ...tls.filter((p) => !plain.includes(p))],
    ...(tls.length ? { tlsPort: tls[0]! } : {}),
    ...(mail ? { mail } : {}),
  };
}

/**
 * Refuses (`PLAN_MAIL_PORTS`) a site whose mail moves while `ports` (what the temporary IP
 * carries) lacks a mail port the origin listens on: that mail would bypass the temporary IP.
 */
export function checkMailPorts(domain: string, ports: number[], mail: SiteMail | undefined): void {
  const missing = (mail?.ports ?? []).filter((p) => !ports.includes(p));
  if (missing.length)
    throw new FerryError(
      'PLAN_MAIL_PORTS',
      `${bare(domain)} has mail on the origin, which listens on port${missing.length > 1 ? 's' : ''} ${missing.join(', ')} for it, but the site's ports (${ports.join(', ')}) do not carry ${missing.length > 1 ? 'them' : 'it'} through the temporary IP: add ${missing.join(', ')} to sites[].ports in ferry.yaml (or set sites[].mail: false to leave the mail on the origin); nothing was changed`,
    );
}

/** A web site's default preflight check: its front page, status and body. */
export const WEB_PARITY: HttpCheck[] = [{ path: '/' }];

/**
 * The preflight checks of a web site: the configured ones (default GET / with its body), and, when
 * the site has a TLS listen, each again over HTTPS with SNI = the domain on that port, plus the
 * certificate's names and fingerprint there. Certificates are not verified against a CA: the
 * check compares what origin and target serve, so the target must serve the very same one.
 */
export function webParity(configured: ParityChecks | undefined, web: WebPlan | undefined): ParityChecks {
  const base: HttpCheck[] = configured?.http ?? WEB_PARITY;
  const tlsPort = web?.tlsPort;
  if (tlsPort === undefined) return { ...configured, http: base };
  const hasTls = base.some((c) => c.tls);
  const http = hasTls ? base : [...base, ...base.map((c) => ({ ...c, tls: true, port: tlsPort }))];
  const tlsPorts = [...new Set([...(configured?.tlsPorts ?? []), tlsPort])];
  return { ...configured, http, tlsPorts, tlsFingerprint: true };
}

/**
 * The plan lines of a site's mail: each mailbox with what it holds, the aliases, the users and
 * the ports; or that the mail stays on the origin (`sites[].mail: false`).
 */
export function describeMail(mail: SiteMail | undefined, stays = false): string[] {
  if (stays) return ['mail stays on the origin (sites[].mail: false): not copied, held or relayed'];
  if (!mail) return [];
  return [
    ...mail.mailboxes.map(
      (m) => `mailbox ${m.address}: ${m.messages} message${m.messages === 1 ? '' : 's'}, ${m.bytes} bytes`,
    ),
    ...mail.aliases.map((a) => `alias ${a.address} → ${a.to.join(', ')}`),
    ...(mail.users.length ? [`users: ${mail.users.join(', ')}`] : []),
    `ports: ${mail.ports.join(', ') || 'none'}`,
  ];
}
