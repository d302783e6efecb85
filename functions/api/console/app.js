// The console's shell: session, navigation, language, and the one notice area every page
// reports errors in. Pages are in pages.js; all data comes from the public API (api.js).

import { ApiError, get, del, setCsrf, whenSignedOut } from './api.js';
import { t, setLocale, initialLocale, getLocale, translate } from './i18n.js';
import * as pages from './pages.js';
import { h, notice, explain, can, state } from './ui.js';

const customerNav = [
  ['overview', 'nav_overview'],
  ['ledger', 'nav_ledger'],
  ['batches', 'nav_batches'],
  ['keys', 'nav_keys', 'admin'],
  ['webhooks', 'nav_webhooks', 'admin'],
  ['exports', 'nav_exports'],
  ['statements', 'nav_statements'],
  ['sla', 'nav_sla'],
  ['billing', 'nav_billing'],
  ['usage', 'nav_usage', 'admin'],
];

function renderChrome() {
  const nav = document.getElementById('nav');
  const who = document.getElementById('who');
  const out = document.getElementById('signout');
  nav.replaceChildren();
  const s = state.session;
  if (s && s.kind === 'customer') {
    for (const [route, label, scope] of customerNav) {
      if (scope && !can(scope)) continue;
      nav.append(h('a', { href: `#/${route}`, dataset: { route } }, t(label)));
    }
    who.textContent = `${s.account_name} · ${s.read_only ? t('read_only_pass') : s.key_id}`;
  } else if (s && s.kind === 'operator') {
    nav.append(h('a', { href: '#/operator', dataset: { route: 'operator' } }, s.operator));
    who.textContent = s.operator;
  } else {
    who.textContent = '';
  }
  const banner = document.getElementById('banner');
  banner.hidden = !(s && s.read_only);
  banner.textContent = s && s.read_only ? t('read_only_banner') : '';
  nav.hidden = !s;
  out.hidden = !s;
  translate(document.querySelector('header'));
}

// Each navigation renders into a fresh view: a page still loading for an earlier one
// renders into a view that is no longer shown, and its polls stop by themselves.
async function route() {
  const main = h('div', { class: 'view' });
  document.getElementById('main').replaceChildren(main);
  // A page may take parameters after `?` (a checkout's return: #/billing?checkout=paid).
  const [path, params] = location.hash.replace(/^#\/?/, '').split('?');
  const parts = path.split('/').filter(Boolean);
  const s = state.session;
  for (const a of document.querySelectorAll('#nav a')) {
    if (a.dataset.route === (parts[0] || 'overview')) a.setAttribute('aria-current', 'page');
    else a.removeAttribute('aria-current');
  }
  main.append(h('p', { class: 'loading' }, t('loading')));
  try {
    if (parts[0] === 'operator') {
      if (!s || s.kind !== 'operator') return pages.operatorSignIn(main, signedIn);
      return pages.operatorHome(main);
    }
    if (!s || s.kind !== 'customer') return pages.signIn(main, signedIn);
    const page = {
      overview: pages.overview,
      ledger: pages.ledger,
      batches: parts[1] ? (m) => pages.batch(m, parts[1]) : pages.batches,
      keys: pages.keys,
      webhooks: pages.webhooks,
      exports: pages.exports,
      statements: pages.statements,
      sla: pages.sla,
      billing: (m) => pages.billing(m, params),
      usage: pages.usage,
    }[parts[0] || 'overview'];
    await (page || pages.overview)(main);
  } catch (err) {
    main.replaceChildren(h('p', { class: 'error' }, explain(err)));
  }
}

function hint(kind) {
  try {
    if (kind === undefined) return localStorage.getItem('console.session');
    if (kind) localStorage.setItem('console.session', kind);
    else localStorage.removeItem('console.session');
  } catch {
    // storage off: a reload asks to sign in again
  }
  return null;
}

function signedIn(s) {
  state.session = s;
  hint(s.kind);
  setCsrf(s.csrf_token);
  notice('');
  renderChrome();
  go(s.kind === 'operator' ? '#/operator' : '#/overview');
}

// Goes to `hash` (the hashchange renders it), or renders again where we are.
function go(hash) {
  if (location.hash !== hash) location.hash = hash;
  else route();
}

function signedOut(message) {
  state.session = null;
  hint(null);
  setCsrf(null);
  renderChrome();
  notice(message, 'info');
  go(location.hash.startsWith('#/operator') ? '#/operator' : '#/sign-in');
}

async function boot() {
  setLocale(initialLocale());
  const lang = document.getElementById('lang');
  lang.value = getLocale();
  lang.addEventListener('change', () => {
    setLocale(lang.value);
    renderChrome();
    route();
  });
  document.getElementById('signout').addEventListener('click', async () => {
    const s = state.session;
    try {
      await del(s && s.kind === 'operator' ? '/admin/v1/console/session' : '/v1/console/session');
    } catch (err) {
      if (!(err instanceof ApiError && err.status === 401)) return notice(explain(err));
    }
    signedOut(t('signed_out'));
  });
  whenSignedOut(() => signedOut(t('session_ended')));
  // The cookie is HttpOnly, so the page cannot see it: a note of which kind of session it
  // opened says whether there is one to pick up (and spares a refused call when there is not).
  const kind = hint();
  if (kind) {
    try {
      state.session = await get(kind === 'operator' ? '/admin/v1/console/session' : '/v1/console/session', { quiet: true });
      setCsrf(state.session.csrf_token);
    } catch (err) {
      state.session = null;
      hint(null);
      if (err instanceof ApiError && err.status === 401) notice(t('session_ended'), 'info');
    }
  }
  renderChrome();
  window.addEventListener('hashchange', route);
  route();
}

boot();
