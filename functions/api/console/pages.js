// The console's pages. Each renders into `main` from the public API; forms keep what the
// person typed when a call fails, and say why in the notice area.

import { api, get, post, patch, del, query, requestId, ApiError } from './api.js';
import { t, num, usd, when, status } from './i18n.js';
import { h, notice, explain, can, session } from './ui.js';

// ---- small pieces -------------------------------------------------------------------------

function credits(n) {
  return h('span', { class: 'amount' }, `${num(n)} ${t('credits')} `, h('small', {}, usd(n)));
}

function table(headers, rows, empty) {
  if (!rows.length) return h('p', { class: 'empty' }, empty || t('none_yet'));
  return h('table', {},
    h('thead', {}, h('tr', {}, headers.map((x) => h('th', { scope: 'col' }, x)))),
    h('tbody', {}, rows));
}

function field(label, control) {
  return h('label', { class: 'field' }, h('span', {}, label), control);
}

// Runs `fn` for a form submission: the button is disabled while it runs, the notice says
// what went wrong, and the form is left as it was so nothing typed is lost.
async function submitting(button, fn) {
  button.disabled = true;
  notice('');
  try {
    await fn();
  } catch (err) {
    notice(explain(err));
  } finally {
    button.disabled = false;
  }
}

// Repeats `fn` every `ms` while `view` is on screen: once the person goes elsewhere the
// view is detached and the loop ends by itself.
function every(view, ms, fn) {
  const tick = async () => {
    if (!view.isConnected) return;
    try {
      await fn();
    } catch (err) {
      if (!(err instanceof ApiError && err.status === 401)) notice(explain(err));
    }
    if (view.isConnected) setTimeout(tick, ms);
  };
  setTimeout(tick, ms);
}

function secretBox(secret, label) {
  const box = h('output', { class: 'secret', id: 'new-secret' }, secret);
  const copy = h('button', {
    type: 'button',
    onclick: async () => {
      try {
        await navigator.clipboard.writeText(secret);
        notice(t('copied'), 'info');
      } catch {
        const r = document.createRange();
        r.selectNodeContents(box);
        getSelection().removeAllRanges();
        getSelection().addRange(r);
      }
    },
  }, t('copy'));
  return h('div', { class: 'once', role: 'status' }, h('p', {}, label), box, copy);
}

function progressBar(c) {
  const done = c.succeeded + c.failed + c.rejected + c.timed_out + c.cancelled + (c.released || 0);
  const pct = c.total ? Math.round((100 * done) / c.total) : 0;
  return h('div', { class: 'progress', role: 'progressbar', 'aria-valuemin': 0, 'aria-valuemax': 100, 'aria-valuenow': pct, title: `${pct}%` },
    h('span', { style: null, dataset: { pct } }), h('small', {}, `${num(done)} / ${num(c.total)}`));
}

// Widths from data-pct (inline style attributes would need 'unsafe-inline' in the CSP).
function sizeBars(root) {
  for (const s of root.querySelectorAll('.progress span[data-pct]')) s.style.width = `${s.dataset.pct}%`;
}

// ---- sign-in --------------------------------------------------------------------------

export function signIn(main, done) {
  const input = h('input', { id: 'key', type: 'password', autocomplete: 'off', required: true, spellcheck: 'false' });
  const button = h('button', { type: 'submit' }, t('sign_in'));
  const form = h('form', {
    class: 'card narrow',
    onsubmit: (e) => {
      e.preventDefault();
      submitting(button, async () => {
        const s = await post('/v1/console/sessions', {}, { bearer: input.value.trim() });
        input.value = '';
        done(s);
      });
    },
  }, h('h1', {}, t('sign_in_title')), h('p', {}, t('sign_in_help')), field(t('api_key'), input), button,
  h('p', { class: 'aside' }, h('a', { href: '#/operator' }, t('operator_sign_in'))));
  main.replaceChildren(form);
  input.focus();
}

export function operatorSignIn(main, done) {
  const input = h('input', { id: 'credential', type: 'password', autocomplete: 'off', required: true });
  const button = h('button', { type: 'submit' }, t('sign_in'));
  main.replaceChildren(h('form', {
    class: 'card narrow',
    onsubmit: (e) => {
      e.preventDefault();
      submitting(button, async () => {
        const s = await api('POST', '/admin/v1/console/sessions', {}, { bearer: input.value.trim() });
        input.value = '';
        done(s);
      });
    },
  }, h('h1', {}, t('operator_sign_in')), h('p', {}, t('operator_help')), field(t('credential'), input), button,
  h('p', { class: 'aside' }, h('a', { href: '#/sign-in' }, t('sign_in_title')))));
  input.focus();
}

// ---- overview -------------------------------------------------------------------------

export async function overview(main) {
  const [account, running, refunds] = await Promise.all([
    get('/v1/account'),
    get(`/v1/batches${query({ status: 'running', limit: 10 })}`),
    get(`/v1/credits/ledger${query({ kind: 'refund', limit: 5 })}`),
  ]);
  const figures = h('dl', { class: 'figures' });
  const draw = (c) => {
    figures.replaceChildren(
      ...[['balance', c.balance], ['held', c.held], ['lifetime_granted', c.lifetime_granted],
        ['lifetime_charged', c.lifetime_charged], ['lifetime_refunded', c.lifetime_refunded],
        ['lifetime_released', c.lifetime_released]]
        .flatMap(([k, v]) => [h('dt', {}, t(k)), h('dd', { id: `fig-${k}` }, credits(v))]),
      h('dt', {}, t('low_balance')),
      h('dd', {}, account.low_balance_threshold == null ? t('not_set') : credits(account.low_balance_threshold)),
    );
  };
  draw(account.credits);
  main.replaceChildren(
    h('h1', {}, account.name),
    figures,
    h('h2', {}, t('running_batches')),
    table([t('batch'), t('model'), t('progress')], running.data.map((b) =>
      h('tr', {}, h('td', {}, h('a', { href: `#/batches/${b.id}` }, b.id)), h('td', {}, b.model), h('td', {}, progressBar(b.counts))))),
    h('h2', {}, t('latest_refunds')),
    table([t('when'), t('amount'), t('task')], refunds.data.map((e) =>
      h('tr', {}, h('td', {}, when(e.created_at)), h('td', {}, credits(e.amount)), h('td', {}, e.task_id || '—')))),
  );
  sizeBars(main);
  every(main, 2000, async () => draw(await get('/v1/credits')));
}

// ---- ledger ---------------------------------------------------------------------------

const KINDS = ['grant', 'pre_deduct', 'refund', 'release', 'adjustment', 'compensation'];

function ledgerRow(e) {
  return h('tr', { dataset: { seq: e.seq, kind: e.kind } },
    h('td', {}, num(e.seq)),
    h('td', {}, when(e.created_at)),
    h('td', {}, t(`kind_${e.kind}`)),
    h('td', { class: e.amount < 0 ? 'neg' : 'pos' }, credits(e.amount)),
    h('td', {}, credits(e.balance_after)),
    h('td', {}, e.batch_id ? h('a', { href: `#/batches/${e.batch_id}` }, e.batch_id) : '—'),
    h('td', {}, e.task_id || '—'),
    h('td', {}, e.reason || ''));
}

export async function ledger(main) {
  const kind = h('select', { id: 'f-kind' }, h('option', { value: '' }, t('all')),
    KINDS.map((k) => h('option', { value: k }, t(`kind_${k}`))));
  const from = h('input', { id: 'f-from', type: 'datetime-local' });
  const to = h('input', { id: 'f-to', type: 'datetime-local' });
  const body = h('tbody', { id: 'ledger-rows' });
  const more = h('button', { type: 'button', hidden: true }, t('more'));
  const live = h('span', { id: 'live', class: 'live', role: 'status' }, `● ${t('live')}`);
  let cursor = null;
  let newest = 0;
  const params = () => ({
    kind: kind.value,
    from: from.value ? new Date(from.value).toISOString() : '',
    to: to.value ? new Date(to.value).toISOString() : '',
  });
  const load = async (reset) => {
    const p = await get(`/v1/credits/ledger${query({ ...params(), limit: 50, cursor: reset ? '' : cursor })}`);
    if (reset) {
      body.replaceChildren();
      newest = 0;
    }
    for (const e of p.data) {
      body.append(ledgerRow(e));
      newest = Math.max(newest, e.seq);
    }
    cursor = p.next_cursor;
    more.hidden = !p.has_more;
  };
  more.addEventListener('click', () => submitting(more, () => load(false)));
  const apply = h('button', { type: 'submit' }, t('apply'));
  const filters = h('form', {
    class: 'filters',
    onsubmit: (e) => {
      e.preventDefault();
      submitting(apply, () => load(true));
    },
  }, field(t('kind'), kind), field(t('from'), from), field(t('to'), to), apply);
  const exporter = (format, label) => {
    const b = h('button', { type: 'button', id: `export-${format}` }, label);
    b.addEventListener('click', () => submitting(b, () => exportAndDownload('ledger', format, params())));
    return b;
  };
  await load(true);
  main.replaceChildren(
    h('div', { class: 'title' }, h('h1', {}, t('nav_ledger')), live),
    filters,
    h('div', { class: 'actions' }, exporter('csv', t('export_csv')), exporter('json', t('export_json'))),
    h('table', {}, h('thead', {}, h('tr', {},
      ['#', t('when'), t('kind'), t('amount'), t('balance_after'), t('batch'), t('task'), t('reason')].map((x) => h('th', { scope: 'col' }, x)))), body),
    more,
  );
  // Live: the account's newest sequence number is one cheap read; new entries are fetched
  // only when it moved, and shown on top without a reload.
  every(main, 1000, async () => {
    let c;
    try {
      c = await get('/v1/credits');
    } catch (err) {
      live.textContent = `○ ${t('paused')}`;
      live.classList.add('paused');
      throw err;
    }
    live.textContent = `● ${t('live')}`;
    live.classList.remove('paused');
    if (c.ledger_seq <= newest) return;
    const p = await get(`/v1/credits/ledger${query({ ...params(), limit: 50 })}`);
    const fresh = p.data.filter((e) => e.seq > newest).reverse();
    for (const e of fresh) {
      body.prepend(ledgerRow(e));
      newest = Math.max(newest, e.seq);
    }
    newest = Math.max(newest, c.ledger_seq);
  });
}

// Asks for an export, waits for it, and downloads the file (the export flow of the API).
async function exportAndDownload(dataset, format, range) {
  const body = { request_id: requestId('console-export'), dataset, format };
  if (range.from) body.from = range.from;
  if (range.to) body.to = range.to;
  let x = await post('/v1/exports', body);
  notice(t('export_preparing'), 'info');
  for (let i = 0; i < 300 && x.status !== 'completed' && x.status !== 'failed'; i += 1) {
    await new Promise((r) => setTimeout(r, 1000));
    x = await get(`/v1/exports/${x.id}`);
  }
  if (x.status !== 'completed') throw new Error(x.error || x.status);
  notice(t('export_ready'), 'info');
  const a = h('a', { href: x.download_url, download: `${dataset}.${format}`, hidden: true, id: 'download-link' });
  document.body.append(a);
  a.click();
  a.remove();
}

// ---- batches --------------------------------------------------------------------------

export async function batches(main) {
  const body = h('tbody');
  const more = h('button', { type: 'button', hidden: true }, t('more'));
  let cursor = null;
  const load = async () => {
    const p = await get(`/v1/batches${query({ limit: 25, cursor })}`);
    for (const b of p.data) {
      body.append(h('tr', {},
        h('td', {}, h('a', { href: `#/batches/${b.id}` }, b.id)),
        h('td', {}, status(b.status)), h('td', {}, b.model), h('td', {}, progressBar(b.counts)),
        h('td', {}, credits(b.credits.held)), h('td', {}, when(b.created_at))));
    }
    sizeBars(body);
    cursor = p.next_cursor;
    more.hidden = !p.has_more;
  };
  more.addEventListener('click', () => submitting(more, load));
  await load();
  main.replaceChildren(h('h1', {}, t('nav_batches')),
    h('table', {}, h('thead', {}, h('tr', {}, [t('batch'), t('status'), t('model'), t('progress'), t('held'), t('created')].map((x) => h('th', { scope: 'col' }, x)))), body),
    more);
  if (!body.children.length) main.append(h('p', { class: 'empty' }, t('none_yet')));
}

export async function batch(main, id) {
  const head = h('div');
  const tasks = h('div');
  const draw = async () => {
    const [b, ts] = await Promise.all([
      get(`/v1/batches/${encodeURIComponent(id)}`),
      get(`/v1/batches/${encodeURIComponent(id)}/tasks${query({ limit: 100 })}`),
    ]);
    const c = b.counts;
    const cancel = can('batches:write') && b.status !== 'completed' && !b.cancel_requested
      ? h('button', {
        type: 'button',
        class: 'danger',
        id: 'cancel-batch',
        onclick: (e) => {
          if (!confirm(t('cancel_confirm', { running: num(c.running), queued: num(c.queued) }))) return;
          submitting(e.target, async () => {
            await post(`/v1/batches/${encodeURIComponent(id)}/cancel`, { request_id: requestId('console-cancel') });
            notice(t('cancel_requested'), 'info');
            await draw();
          });
        },
      }, t('cancel_batch'))
      : null;
    head.replaceChildren(
      h('p', {}, h('a', { href: '#/batches' }, `← ${t('back')}`)),
      h('h1', {}, `${t('batch')} ${b.id}`),
      h('dl', { class: 'figures' },
        h('dt', {}, t('status')), h('dd', { id: 'batch-status' }, status(b.status)),
        h('dt', {}, t('model')), h('dd', {}, b.model),
        h('dt', {}, t('progress')), h('dd', {}, progressBar(c)),
        h('dt', {}, t('held')), h('dd', {}, credits(b.credits.held)),
        h('dt', {}, t('charged')), h('dd', {}, credits(b.credits.charged)),
        h('dt', {}, t('refunded')), h('dd', { id: 'batch-refunded' }, credits(b.credits.refunded)),
        h('dt', {}, t('released')), h('dd', {}, credits(b.credits.released))),
      h('p', { class: 'counts' }, Object.entries(c).map(([k, v]) => h('span', {}, `${status(k)}: ${num(v)}`))),
      cancel);
    // A video's link is signed when asked for (it expires), so it is fetched on the click.
    const video = (x) => h('button', {
      type: 'button',
      class: 'link',
      onclick: (e) => submitting(e.target, async () => {
        const one = await get(`/v1/tasks/${encodeURIComponent(x.id)}`);
        if (one.download_url) location.assign(one.download_url);
      }),
    }, t('download'));
    tasks.replaceChildren(h('h2', {}, t('tasks')), table(['#', t('status'), t('created'), t('started'), t('ended'), t('error'), ''],
      ts.data.map((x) => h('tr', {}, h('td', {}, num(x.index)), h('td', {}, status(x.status)), h('td', {}, when(x.created_at)),
        h('td', {}, when(x.started_at)), h('td', {}, when(x.ended_at)),
        h('td', {}, x.error ? `${x.error.code}: ${x.error.message}` : ''),
        h('td', {}, x.status === 'succeeded' ? video(x) : '')))));
    sizeBars(head);
    return b;
  };
  const b = await draw();
  main.replaceChildren(head, tasks);
  if (b.status !== 'completed') every(main, 2000, draw);
}

// ---- API keys ---------------------------------------------------------------------------

export async function keys(main) {
  const list = h('div');
  const draw = async () => {
    const p = await get(`/v1/api-keys${query({ limit: 100 })}`);
    list.replaceChildren(table([t('name'), 'ID', t('status'), t('scopes'), t('rate_limit'), t('expires'), ''],
      p.data.map((k) => {
        const toggle = k.status === 'active' || k.status === 'disabled'
          ? h('button', {
            type: 'button',
            dataset: { action: k.enabled ? 'disable' : 'enable', key: k.id },
            onclick: (e) => submitting(e.target, async () => {
              await patch(`/v1/api-keys/${k.id}`, { enabled: !k.enabled });
              await draw();
            }),
          }, k.enabled ? t('disable') : t('enable'))
          : null;
        const revoke = k.status !== 'revoked'
          ? h('button', {
            type: 'button',
            class: 'danger',
            dataset: { action: 'revoke', key: k.id },
            onclick: (e) => {
              if (!confirm(t('revoke_confirm'))) return;
              submitting(e.target, async () => {
                await del(`/v1/api-keys/${k.id}`);
                await draw();
              });
            },
          }, t('revoke'))
          : null;
        return h('tr', { dataset: { key: k.id } }, h('td', {}, k.name), h('td', {}, `${k.prefix}…${k.last4}`),
          h('td', { class: 'status' }, status(k.status)), h('td', {}, k.scopes.join(', ')), h('td', {}, num(k.rate_limit_per_min)),
          h('td', {}, when(k.expires_at)), h('td', { class: 'row-actions' }, toggle, revoke));
      })));
  };
  const name = h('input', { id: 'key-name', required: true, maxlength: 100 });
  const scopes = ['read', 'batches:write', 'admin'].map((s) =>
    h('label', { class: 'check' }, h('input', { type: 'checkbox', value: s, name: 'scope', checked: s === 'read' }), s));
  const rate = h('input', { id: 'key-rate', type: 'number', min: 1, placeholder: '600' });
  const allow = h('textarea', { id: 'key-allow', rows: 2 });
  const expires = h('input', { id: 'key-expires', type: 'datetime-local' });
  const created = h('div');
  const button = h('button', { type: 'submit' }, t('create_key'));
  let rid = requestId('console-key');
  const form = h('form', {
    class: 'card',
    onsubmit: (e) => {
      e.preventDefault();
      submitting(button, async () => {
        const body = {
          request_id: rid,
          name: name.value,
          scopes: scopes.map((l) => l.querySelector('input')).filter((i) => i.checked).map((i) => i.value),
        };
        if (rate.value) body.rate_limit_per_min = Number(rate.value);
        const cidrs = allow.value.split(/\s+/).filter(Boolean);
        if (cidrs.length) body.ip_allowlist = cidrs;
        if (expires.value) body.expires_at = new Date(expires.value).toISOString();
        const k = await post('/v1/api-keys', body);
        rid = requestId('console-key');
        form.reset();
        created.replaceChildren(secretBox(k.secret, t('key_created')));
        await draw();
      });
    },
  }, h('h2', {}, t('create_key')), field(t('name'), name), h('fieldset', {}, h('legend', {}, t('scopes')), scopes),
  field(t('rate_limit'), rate), field(t('allowlist'), allow), field(t('expires'), expires), button);
  await draw();
  main.replaceChildren(h('h1', {}, t('nav_keys')), created, list, form);
}

// ---- webhooks ---------------------------------------------------------------------------

export async function webhooks(main) {
  const list = h('div');
  const shown = h('div');
  const log = h('div');
  const draw = async () => {
    const p = await get('/v1/webhook-endpoints');
    list.replaceChildren(table([t('url'), t('status'), ''], p.data.map((e) => h('tr', {},
      h('td', {}, e.url), h('td', {}, e.enabled ? 'enabled' : `disabled (${e.disabled_reason || ''})`),
      h('td', { class: 'row-actions' },
        h('button', {
          type: 'button',
          onclick: (ev) => submitting(ev.target, async () => {
            const d = await get(`/v1/webhook-endpoints/${e.id}/deliveries${query({ limit: 50 })}`);
            const redeliver = (x) => h('button', {
              type: 'button',
              onclick: (ev2) => submitting(ev2.target, async () => {
                await post(`/v1/events/${x.event_id}/redeliver`, { endpoint_id: e.id });
                notice(t('redelivery_queued'), 'info');
              }),
            }, t('redeliver'));
            const since = h('input', { type: 'datetime-local', required: true });
            const go = h('button', { type: 'submit' }, t('recover'));
            log.replaceChildren(h('h2', {}, `${t('deliveries')}: ${e.url}`), table([t('when'), 'event', t('status'), t('attempts'), ''],
              d.data.map((x) => h('tr', {}, h('td', {}, when(x.created_at)), h('td', {}, x.event_type), h('td', {}, status(x.status)),
                h('td', {}, (x.attempts || []).map((a) => `${a.status_code ?? a.error ?? ''}`).join(' · ')),
                h('td', {}, x.status === 'pending' ? '' : redeliver(x))))),
            h('form', {
              class: 'filters',
              onsubmit: (ev3) => {
                ev3.preventDefault();
                submitting(go, async () => {
                  const r = await post(`/v1/webhook-endpoints/${e.id}/recover`, { since: new Date(since.value).toISOString() });
                  notice(`${t('redelivery_queued')} (${num(r.redelivering ?? 0)})`, 'info');
                });
              },
            }, field(t('recover_since'), since), go));
          }),
        }, t('deliveries')),
        h('button', {
          type: 'button',
          onclick: (ev) => submitting(ev.target, async () => {
            const r = await post(`/v1/webhook-endpoints/${e.id}/rotate-secret`, { request_id: requestId('console-rotate') });
            shown.replaceChildren(secretBox(r.secret, t('secret_once')));
          }),
        }, t('rotate_secret')))))));
  };
  const url = h('input', { id: 'endpoint-url', type: 'url', required: true, placeholder: 'https://' });
  const button = h('button', { type: 'submit' }, t('add_endpoint'));
  let rid = requestId('console-endpoint');
  const form = h('form', {
    class: 'card',
    onsubmit: (e) => {
      e.preventDefault();
      submitting(button, async () => {
        const r = await post('/v1/webhook-endpoints', { request_id: rid, url: url.value });
        rid = requestId('console-endpoint');
        form.reset();
        shown.replaceChildren(secretBox(r.secret, t('secret_once')));
        await draw();
      });
    },
  }, h('h2', {}, t('add_endpoint')), field(t('url'), url), button);
  await draw();
  main.replaceChildren(h('h1', {}, t('nav_webhooks')), shown, list, form, log);
}

// ---- exports ------------------------------------------------------------------------------

export async function exports(main) {
  const list = h('div');
  const draw = async () => {
    const p = await get(`/v1/exports${query({ limit: 50 })}`);
    list.replaceChildren(table([t('created'), t('dataset'), t('format'), t('status'), ''], p.data.map((x) => h('tr', {},
      h('td', {}, when(x.created_at)), h('td', {}, x.dataset), h('td', {}, x.format), h('td', {}, status(x.status)),
      h('td', {}, x.download_url ? h('a', { href: x.download_url, download: '' }, t('download')) : '')))));
  };
  const datasets = can('admin') ? ['ledger', 'batches', 'tasks', 'usage', 'webhook_deliveries', 'account_archive'] : ['ledger', 'batches', 'tasks'];
  const dataset = h('select', { id: 'export-dataset' }, datasets.map((d) => h('option', { value: d }, d)));
  const format = h('select', { id: 'export-format' }, ['csv', 'json'].map((f) => h('option', { value: f }, f)));
  const button = h('button', { type: 'submit' }, t('create_export'));
  const form = h('form', {
    class: 'card',
    onsubmit: (e) => {
      e.preventDefault();
      submitting(button, async () => {
        await exportAndDownload(dataset.value, format.value, {});
        await draw();
      });
    },
  }, h('h2', {}, t('create_export')), field(t('dataset'), dataset), field(t('format'), format), button);
  await draw();
  main.replaceChildren(h('h1', {}, t('nav_exports')), form, list);
}

// ---- operators ------------------------------------------------------------------------------

const MODELS = ['sora-2', 'veo-pro'];

export async function operatorHome(main) {
  const id = h('input', { id: 'account-id', required: true });
  const found = h('div', { id: 'account-panel' });
  const show = async (accountId) => {
    const path = `/admin/v1/accounts/${encodeURIComponent(accountId)}`;
    const a = await get(path);
    found.replaceChildren(
      h('h2', {}, `${a.name} (${a.id})`),
      h('dl', { class: 'figures' },
        h('dt', {}, t('status')), h('dd', { id: 'op-status' }, status(a.status)),
        h('dt', {}, t('balance')), h('dd', { id: 'op-balance' }, credits(a.credits.balance)),
        h('dt', {}, t('held')), h('dd', {}, credits(a.credits.held)),
        h('dt', {}, t('retention_days')), h('dd', {}, num(a.retention_days)),
        h('dt', {}, t('max_concurrency')), h('dd', {}, num(a.max_concurrency)),
        h('dt', {}, t('request_budget')), h('dd', {}, num(a.request_budget_per_min))),
      a.payment_issue ? h('p', { class: 'error', id: 'op-payment-issue' }, t('payment_issue_text', {
        kind: a.payment_issue.kind, reference: a.payment_issue.reference,
        shortfall: num(a.payment_issue.shortfall_credits),
      })) : null,
      grantForm(path, () => show(accountId)),
      adjustForm(path, () => show(accountId)),
      wireForm(path, () => show(accountId)),
      termsForm(path, a, () => show(accountId)),
      lifecycle(path, a, () => show(accountId)),
      passButton(path, a),
    );
  };
  const results = h('div', { id: 'search-results' });
  // By id (opens it) or by name (lists the matches to open).
  const search = async (q) => {
    const r = await get(`/admin/v1/accounts${query({ q, limit: 50 })}`);
    const exact = r.data.find((a) => a.id === q);
    if (exact) {
      results.replaceChildren();
      return show(exact.id);
    }
    found.replaceChildren();
    results.replaceChildren(table([t('name'), t('account_id'), t('status'), t('balance'), ''], r.data.map((a) =>
      h('tr', {}, h('td', {}, a.name), h('td', {}, a.id), h('td', {}, status(a.status)), h('td', {}, credits(a.credits.balance)),
        h('td', {}, h('button', { type: 'button', onclick: (e) => submitting(e.target, () => show(a.id)) }, t('open')))))),
    r.has_more ? h('p', { class: 'aside' }, t('narrow_search')) : null);
  };
  const look = h('button', { type: 'submit' }, t('search'));
  const models = h('div', { id: 'models' });
  // There is no operator read of the catalogue: each form says what it last set.
  const drawModels = async () => {
    models.replaceChildren(h('h2', {}, t('models')), ...MODELS.map((m) => modelForm(m)));
  };
  const recon = h('div', { id: 'reconcile-all' });
  const check = h('button', { type: 'button', id: 'reconcile-all-button' }, t('reconcile_all'));
  check.addEventListener('click', () => submitting(check, async () => {
    const s = await get('/admin/v1/reconcile');
    recon.replaceChildren(h('p', { class: s.accounts_with_discrepancies ? 'error' : 'ok' },
      t('reconcile_summary', { checked: num(s.accounts_checked), bad: num(s.accounts_with_discrepancies) })),
    table(['account', 'balance', 'ledger'], s.reports.map((r) => h('tr', {}, h('td', {}, r.account_id),
      h('td', {}, num(r.balance)), h('td', {}, num(r.ledger_sum))))));
  }));
  await drawModels();
  main.replaceChildren(h('h1', {}, `${t('operator')}: ${session().operator}`),
    h('form', {
      class: 'filters',
      onsubmit: (e) => {
        e.preventDefault();
        submitting(look, () => search(id.value.trim()));
      },
    }, field(t('account_search'), id), look),
    results,
    found,
    models,
    h('h2', {}, t('reconciliation')), check, recon);
}

// A form whose submission is one operator call with its own request_id (kept across retries
// of the same submission, renewed once it succeeded).
function operatorForm(title, id, fields, call, after) {
  const go = h('button', { type: 'submit' }, title);
  let rid = requestId(`console-${id}`);
  const form = h('form', {
    class: 'card',
    id,
    onsubmit: (e) => {
      e.preventDefault();
      submitting(go, async () => {
        await call(rid);
        rid = requestId(`console-${id}`);
        // Redrawn first, then said: the notice means the panel shows the change.
        await after();
        notice(t('saved'), 'info');
      });
    },
  }, h('h3', {}, title), ...fields, go);
  return form;
}

function grantForm(path, after) {
  const amount = h('input', { id: 'grant-amount', type: 'number', min: 1 });
  const pack = h('select', { id: 'grant-pack' }, h('option', { value: '' }, '—'),
    ['pack_2000', 'pack_5000', 'pack_10000'].map((p) => h('option', { value: p }, p)));
  const reason = h('input', { id: 'grant-reason', required: true });
  return operatorForm(t('grant'), 'grant-form', [field(t('pack'), pack), field(t('amount'), amount), field(t('reason'), reason)],
    (rid) => {
      const body = { request_id: rid, reason: reason.value };
      if (pack.value) body.pack = pack.value;
      else body.amount = Number(amount.value);
      return post(`${path}/grants`, body);
    }, after);
}

function adjustForm(path, after) {
  const amount = h('input', { id: 'adjust-amount', type: 'number', required: true });
  const kind = h('select', { id: 'adjust-kind' }, ['adjustment', 'compensation'].map((k) => h('option', { value: k }, t(`kind_${k}`))));
  const reason = h('input', { id: 'adjust-reason', required: true });
  return operatorForm(t('adjust'), 'adjust-form', [field(t('kind'), kind), field(t('amount'), amount), field(t('reason'), reason)],
    (rid) => post(`${path}/adjustments`, { request_id: rid, amount: Number(amount.value), kind: kind.value, reason: reason.value }),
    after);
}

// A wire transfer arrived quoting a pro-forma: the server checks the amount and grants with
// the invoice (recording the same transfer twice is harmless).
function wireForm(path, after) {
  const reference = h('input', { id: 'wire-reference', required: true, placeholder: 'PF-2026-000001' });
  const amount = h('input', { id: 'wire-amount', type: 'number', min: 0.01, step: 0.01, required: true });
  return operatorForm(t('record_wire'), 'wire-form',
    [field(t('payment_reference'), reference), field(t('wire_amount_usd'), amount)],
    () => post(`${path}/wire-receipts`, {
      reference: reference.value.trim(), amount_usd_cents: Math.round(Number(amount.value) * 100),
    }), after);
}

function termsForm(path, a, after) {
  const retention = h('input', { id: 'terms-retention', type: 'number', min: 1, value: a.retention_days });
  const conc = h('input', { id: 'terms-concurrency', type: 'number', min: 1, value: a.max_concurrency });
  const budget = h('input', { id: 'terms-budget', type: 'number', min: 1, value: a.request_budget_per_min });
  return operatorForm(t('terms'), 'terms-form',
    [field(t('retention_days'), retention), field(t('max_concurrency'), conc), field(t('request_budget'), budget)],
    () => patch(path, {
      retention_days: Number(retention.value),
      max_concurrency: Number(conc.value),
      request_budget_per_min: Number(budget.value),
    }), after);
}

function passButton(path, a) {
  if (a.status === 'active') return null;
  const shown = h('div');
  const b = h('button', { type: 'button', id: 'issue-pass' }, t('issue_pass'));
  b.addEventListener('click', () => submitting(b, async () => {
    const r = await post(`${path}/console-passes`, {});
    shown.replaceChildren(secretBox(r.pass, t('pass_once', { until: when(r.expires_at) })));
  }));
  return h('div', {}, b, shown);
}

function lifecycle(path, a, after) {
  const terminate = a.status === 'active';
  const b = h('button', { type: 'button', class: terminate ? 'danger' : '', id: terminate ? 'terminate' : 'reinstate' },
    terminate ? t('terminate') : t('reinstate'));
  b.addEventListener('click', () => {
    if (terminate && !confirm(t('terminate_confirm'))) return;
    submitting(b, async () => {
      await post(`${path}/${terminate ? 'terminate' : 'reinstate'}`, {});
      await after();
    });
  });
  return h('p', {}, b);
}

function modelForm(model) {
  const status = h('select', { id: `model-${model}` }, ['available', 'unavailable'].map((s) =>
    h('option', { value: s }, t(`model_${s}`))));
  const reason = h('input', { id: `model-${model}-reason`, required: true });
  const now = h('p', { class: 'aside', id: `model-${model}-now` });
  const form = operatorForm(model, `model-form-${model}`, [field(t('status'), status), field(t('reason'), reason), now],
    async () => {
      const m = await api('PUT', `/admin/v1/models/${model}`, { status: status.value, reason: reason.value });
      now.textContent = `${model}: ${t(`model_${m.status}`)}`;
    }, async () => {});
  return form;
}

// ---- statements and reconciliation ------------------------------------------------------

// A month picker set to the current UTC month.
function monthInput(id) {
  const now = new Date();
  return h('input', {
    id,
    type: 'month',
    value: `${now.getUTCFullYear()}-${String(now.getUTCMonth() + 1).padStart(2, '0')}`,
    required: true,
  });
}

export async function statements(main) {
  const month = monthInput('statement-month');
  const shown = h('div', { id: 'statement' });
  const show = async () => {
    const m = month.value;
    const s = await get(`/v1/statements/${encodeURIComponent(m)}`);
    const mv = s.movements;
    shown.replaceChildren(
      h('h2', {}, `${s.account_name} · ${s.month}`),
      h('dl', { class: 'figures' },
        h('dt', {}, t('opening_balance')), h('dd', {}, credits(s.opening_balance)),
        ...[['kind_grant', mv.grants], ['kind_pre_deduct', mv.pre_deducts], ['kind_refund', mv.refunds],
          ['kind_release', mv.releases], ['kind_adjustment', mv.adjustments], ['kind_compensation', mv.compensation]]
          .flatMap(([k, v]) => [h('dt', {}, t(k)), h('dd', {}, credits(v))]),
        h('dt', {}, t('closing_balance')), h('dd', { id: 'closing-balance' }, credits(s.closing_balance))),
      h('p', { class: 'actions' },
        h('a', { href: `/v1/statements/${encodeURIComponent(m)}?format=html`, target: '_blank', rel: 'noopener' }, t('printable')),
        h('a', { href: `/v1/statements/${encodeURIComponent(m)}?format=csv`, download: `statement-${m}.csv` }, 'CSV')),
    );
  };
  const button = h('button', { type: 'submit' }, t('apply'));
  const recon = h('div', { id: 'reconcile' });
  const r = await get('/v1/credits/reconcile');
  recon.replaceChildren(h('h2', {}, t('reconciliation')),
    h('p', { class: r.ok ? 'ok' : 'error' }, r.ok ? t('reconciles') : t('does_not_reconcile')),
    h('dl', { class: 'figures' },
      h('dt', {}, t('balance')), h('dd', {}, credits(r.balance)),
      h('dt', {}, t('ledger_sum')), h('dd', {}, credits(r.ledger_sum)),
      h('dt', {}, t('ledger_entries')), h('dd', {}, num(r.ledger_entries))),
    r.discrepancies.length ? table(['kind', 'expected', 'found'], r.discrepancies.map((d) =>
      h('tr', {}, h('td', {}, d.kind), h('td', {}, num(d.expected)), h('td', {}, num(d.found))))) : null);
  await show();
  main.replaceChildren(h('h1', {}, t('nav_statements')),
    h('form', {
      class: 'filters',
      onsubmit: (e) => {
        e.preventDefault();
        submitting(button, show);
      },
    }, field(t('month'), month), button),
    shown, recon);
}

// ---- service levels (contract 3; docs/SLA.md) ------------------------------------------------

function seconds(f) {
  if (!f) return '—';
  const s = (ms) => num(Math.round(ms / 100) / 10);
  return `${s(f.ms)} s (${s(f.low_ms)}–${s(f.high_ms)})`;
}

function cause(c) {
  if (c.cause === 'server_errors') return t('cause_server_errors', { errors: num(c.server_errors), valid: num(c.valid) });
  return t('cause_probe_failed', { detail: c.detail });
}

export async function sla(main) {
  const month = monthInput('sla-month');
  const shown = h('div', { id: 'sla' });
  const show = async () => {
    const m = month.value;
    const r = await get(`/v1/sla/${encodeURIComponent(m)}`);
    const a = r.availability;
    const c = r.compensation;
    shown.replaceChildren(
      h('h2', {}, `${r.account_name} · ${r.month} · ${status(r.status)}`),
      h('dl', { class: 'figures' },
        h('dt', {}, t('availability')),
        h('dd', { id: 'sla-availability', class: a.target_met ? 'ok' : 'error' },
          `${a.availability_percent} % (${t('target')} ${a.target_percent} %)`),
        h('dt', {}, t('minutes_down')), h('dd', { id: 'sla-down' }, `${num(a.down_minutes)} / ${num(a.minutes)}`),
        h('dt', {}, t('trailing_year')), h('dd', {}, `${r.trailing_year.availability_percent} % (${r.trailing_year.from_month} – ${r.trailing_year.to_month})`),
        h('dt', {}, t('probe_minutes')), h('dd', {}, `${num(a.probe_ok_minutes)} / ${num(a.probe_failed_minutes)}`)),
      h('h3', {}, t('processing_time')),
      h('p', { class: 'hint' }, t('relative_error', { e: r.relative_error_percent })),
      table([t('model'), t('tasks_measured'), 'p50', 'p95', 'p99', t('within_target'), t('queue_time'), t('platform_failures'), t('excluded')],
        r.processing.map((f) => h('tr', { dataset: { model: f.model } },
          h('td', {}, f.model), h('td', { class: 'n' }, num(f.tasks)),
          h('td', {}, seconds(f.p50)), h('td', {}, seconds(f.p95)), h('td', {}, seconds(f.p99)),
          h('td', { class: f.target_met === false ? 'error' : '' },
            f.within_target_percent === null ? '—' : `${f.within_target_percent} % (${t('target')} ${num(f.target_ms / 1000)} s)`),
          h('td', {}, seconds(f.queue_p95)), h('td', { class: 'n' }, num(f.platform_failures)),
          h('td', {}, Object.entries(f.excluded).map(([k, v]) => `${k}: ${num(v)}`).join(', ') || '—')))),
      h('h3', {}, t('downtime')),
      table([t('minute'), t('cause')], a.downtime.map((d) =>
        h('tr', {}, h('td', {}, when(d.minute)), h('td', {}, d.causes.map(cause).join('; ')))), t('no_downtime')),
      h('h3', {}, t('incidents')),
      table([t('started'), t('ended'), t('platform_failures')], r.incidents.map((i) =>
        h('tr', {}, h('td', {}, when(i.started_at)), h('td', {}, i.ended_at ? when(i.ended_at) : t('ongoing')),
          h('td', { class: 'n' }, num(i.account_failures ?? i.platform_failures)))), t('no_incidents')),
      h('h3', {}, t('compensation')),
      h('dl', { class: 'figures' },
        h('dt', {}, t('charged_in_month')), h('dd', {}, credits(c.charged)),
        h('dt', {}, t('percent')), h('dd', {}, `${num(c.percent)} %`),
        h('dt', {}, t('due')), h('dd', { id: 'sla-due' }, credits(c.due)),
        h('dt', {}, t('issued')), h('dd', { id: 'sla-issued' },
          c.issued ? `${credits(c.issued.credits).textContent} · ${c.issued.ledger_entry || '—'} · ${when(c.issued.closed_at)}` : t('not_issued'))),
      h('p', { class: 'actions' },
        h('a', { href: `/v1/sla/${encodeURIComponent(m)}?format=html`, target: '_blank', rel: 'noopener' }, t('printable_sla'))),
    );
  };
  const button = h('button', { type: 'submit' }, t('apply'));
  await show();
  main.replaceChildren(h('h1', {}, t('nav_sla')),
    h('form', {
      class: 'filters',
      onsubmit: (e) => {
        e.preventDefault();
        submitting(button, show);
      },
    }, field(t('month'), month), button),
    shown);
}

// ---- the usage log (admin) -----------------------------------------------------------------

export async function usage(main) {
  const key = h('input', { id: 'u-key', placeholder: 'key_…' });
  const route = h('input', { id: 'u-route', placeholder: '/v1/batches' });
  const status = h('input', { id: 'u-status', type: 'number', min: 100, max: 599 });
  const body = h('tbody');
  const more = h('button', { type: 'button', hidden: true }, t('more'));
  let cursor = null;
  const load = async (reset) => {
    const p = await get(`/v1/usage${query({ key_id: key.value, route: route.value, status: status.value, limit: 50, cursor: reset ? '' : cursor })}`);
    if (reset) body.replaceChildren();
    for (const u of p.data) {
      body.append(h('tr', {}, h('td', {}, when(u.at)), h('td', {}, u.key_id || '—'), h('td', {}, `${u.method} ${u.route}`),
        h('td', {}, String(u.status)), h('td', {}, u.code || ''), h('td', {}, `${num(u.latency_ms)} ms`),
        h('td', {}, u.source_ip || ''), h('td', {}, u.count ? num(u.count) : '')));
    }
    cursor = p.next_cursor;
    more.hidden = !p.has_more;
  };
  more.addEventListener('click', () => submitting(more, () => load(false)));
  const apply = h('button', { type: 'submit' }, t('apply'));
  await load(true);
  main.replaceChildren(h('h1', {}, t('nav_usage')),
    h('form', {
      class: 'filters',
      onsubmit: (e) => {
        e.preventDefault();
        submitting(apply, () => load(true));
      },
    }, field('key_id', key), field('route', route), field(t('status'), status), apply),
    h('table', {}, h('thead', {}, h('tr', {}, [t('when'), 'key', 'request', t('status'), 'code', 'latency', 'IP', '#'].map((x) => h('th', { scope: 'col' }, x)))), body),
    more);
}

// ---- billing: buy Credits, invoices, the billing profile (contract 8.2; docs/BILLING.md) ----

const PACKS = ['pack_2000', 'pack_5000', 'pack_10000'];

// A document's links are signed when asked for (they expire), so they are fetched on the click.
function documentLinks(path, id) {
  const open = (kind) => h('button', {
    type: 'button',
    class: 'link',
    dataset: { doc: `${id}.${kind}` },
    onclick: async () => {
      try {
        const d = await get(`${path}/${encodeURIComponent(id)}`);
        location.assign(d[kind].url);
      } catch (err) {
        notice(explain(err));
      }
    },
  }, kind.toUpperCase());
  return h('td', { class: 'actions' }, open('pdf'), ' ', open('json'));
}

function documentsTable(rows, path, withPayment) {
  return table([t('invoice_number'), t('issued_on'), t('description'), t('total_usd'), withPayment ? t('paid_by') : t('payment_reference'), ''],
    rows.map((d) => h('tr', { dataset: { invoice: d.id } },
      h('td', {}, d.id), h('td', {}, when(d.issued_at)),
      h('td', {}, d.lines.map((l) => l.description).join('; ')),
      h('td', {}, `US$ ${d.total_usd}`),
      h('td', {}, withPayment ? (d.payment ? t(`paid_${d.payment.method}`) : '') : d.id),
      documentLinks(path, d.id))),
    t('no_invoices'));
}

export async function billing(main, params) {
  const admin = can('admin');
  const back = new URLSearchParams(params || '');
  if (back.get('checkout') === 'paid') notice(t('checkout_paid'), 'info');
  else if (back.get('checkout') === 'cancelled') notice(t('checkout_cancelled'), 'info');

  // Buy: a pack or a top-up, paid on Stripe's page; the Credits arrive when Stripe reports it.
  const what = h('select', { id: 'buy-what' },
    PACKS.map((p) => h('option', { value: p }, t(p))), h('option', { value: 'top_up' }, t('top_up')));
  const amount = h('input', { id: 'buy-amount', type: 'number', min: 50, max: 100000, step: 1, value: 100, disabled: true });
  what.addEventListener('change', () => { amount.disabled = what.value !== 'top_up'; });
  const buyButton = h('button', { type: 'submit', id: 'buy' }, t('checkout'));
  let buyId = null;
  const buy = h('form', {
    class: 'card',
    onsubmit: (e) => {
      e.preventDefault();
      submitting(buyButton, async () => {
        buyId = buyId || requestId('checkout');
        const body = what.value === 'top_up'
          ? { request_id: buyId, amount_usd: Number(amount.value) }
          : { request_id: buyId, pack: what.value };
        const r = await post('/v1/checkout', body);
        buyId = null;
        location.assign(r.url);
      });
    },
  }, h('h2', {}, t('buy_credits')), h('p', {}, t('buy_help')),
  field(t('what_to_buy'), what), field(t('top_up_usd'), amount), buyButton);
  what.addEventListener('change', () => { buyId = null; });
  amount.addEventListener('input', () => { buyId = null; });

  // The billing profile invoices are issued to.
  const { billing_profile: p } = await get('/v1/billing-profile');
  const input = (id, value, attrs = {}) => h('input', { id, value: value || '', ...attrs, disabled: !admin });
  const company = input('bp-company', p && p.company, { required: true, maxlength: 200 });
  const taxId = input('bp-tax-id', p && p.tax_id, { maxlength: 64 });
  const address = h('textarea', { id: 'bp-address', rows: 3, maxlength: 500, required: true, disabled: !admin }, (p && p.address) || '');
  const email = input('bp-email', p && p.billing_email, { type: 'email', required: true });
  const monthly = h('input', { id: 'bp-monthly', type: 'checkbox', checked: !!(p && p.monthly_invoicing), disabled: !admin });
  const saveButton = h('button', { type: 'submit', id: 'bp-save' }, t('save'));
  const profile = h('form', {
    class: 'card',
    id: 'billing-profile',
    onsubmit: (e) => {
      e.preventDefault();
      submitting(saveButton, async () => {
        await api('PUT', '/v1/billing-profile', {
          company: company.value, tax_id: taxId.value || null, address: address.value,
          billing_email: email.value, monthly_invoicing: monthly.checked,
        });
        notice(t('saved'), 'info');
      });
    },
  }, h('h2', {}, t('billing_profile')), h('p', {}, t('billing_profile_help')),
  field(t('company'), company), field(t('tax_id'), taxId), field(t('address'), address),
  field(t('billing_email'), email), field(t('monthly_invoicing'), monthly), admin ? saveButton : null);

  // Pro-forma invoices for a wire transfer.
  const pfPack = h('select', { id: 'pf-pack' }, PACKS.map((x) => h('option', { value: x }, t(x))));
  const pfButton = h('button', { type: 'submit', id: 'pf-request' }, t('request_pro_forma'));
  const proFormas = h('div', { id: 'pro-formas' });
  const invoices = h('div', { id: 'invoices' });
  const draw = async () => {
    const [inv, pf] = await Promise.all([get('/v1/invoices?limit=50'), get('/v1/proforma-invoices?limit=50')]);
    invoices.replaceChildren(h('h2', {}, t('invoices')), documentsTable(inv.data, '/v1/invoices', true));
    proFormas.replaceChildren(h('h2', {}, t('pro_formas')), h('p', {}, t('pro_forma_help')),
      documentsTable(pf.data, '/v1/proforma-invoices', false));
  };
  let pfId = null;
  const pfForm = h('form', {
    class: 'filters',
    onsubmit: (e) => {
      e.preventDefault();
      submitting(pfButton, async () => {
        pfId = pfId || requestId('proforma');
        await post('/v1/proforma-invoices', { request_id: pfId, pack: pfPack.value });
        pfId = null;
        await draw();
      });
    },
  }, field(t('what_to_buy'), pfPack), pfButton);
  pfPack.addEventListener('change', () => { pfId = null; });
  await draw();
  main.replaceChildren(h('h1', {}, t('nav_billing')),
    admin ? buy : null, invoices, profile, proFormas, admin ? pfForm : null);
}
