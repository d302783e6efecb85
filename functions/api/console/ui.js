// What every page shares: the DOM helper, the notice area, the session and its scopes, and
// what to stop when the person leaves a page. No imports of the pages or the shell.

import { ApiError } from './api.js';
import { t } from './i18n.js';

export const state = { session: null };

export function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith('on')) el.addEventListener(k.slice(2), v);
    else if (k === 'dataset') Object.assign(el.dataset, v);
    else el.setAttribute(k, v === true ? '' : v);
  }
  for (const c of children.flat()) {
    if (c === undefined || c === null || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

export function notice(message, kind = 'error') {
  const n = document.getElementById('notice');
  n.textContent = message;
  n.className = `notice ${kind}`;
  n.hidden = !message;
}

// What a person reads when a call fails: the server's own message (it says what to fix),
// or, when the server was not reached, that nothing changed.
export function explain(err) {
  if (err instanceof ApiError) {
    if (err.code === 'network') return t('network_error');
    return `${t('error')} ${err.status} (${err.code}): ${err.message}`;
  }
  return String(err);
}

export function session() {
  return state.session;
}

export function can(scope) {
  const s = state.session;
  if (!s || s.kind !== 'customer') return false;
  const order = ['read', 'batches:write', 'admin'];
  return s.scopes.some((have) => order.indexOf(have) >= order.indexOf(scope));
}


