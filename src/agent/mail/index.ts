/** The mail of a web site's domain (Postfix and Dovecot), moved with the site. */
export { MailSites, MAIL_PORTS, type MailBundle, type MailSitesOptions } from './mail.js';
export { Postfix, type PostfixDomainMail, type PostfixDomainState, type PostfixLines } from './postfix.js';
export { Dovecot, type MailUser } from './dovecot.js';
