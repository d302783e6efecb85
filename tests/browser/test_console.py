"""The console in a real browser against the real local stack (API, functions, emulator)."""

import csv
import io

from conftest import API, OPERATOR, call, fresh_account, ok, open_account_as_operator, sign_in



def all_ledger(key):
    out, cursor = [], None
    while True:
        q = "?limit=200" + (f"&cursor={cursor}" if cursor else "")
        page = ok(call("GET", f"/v1/credits/ledger{q}", key))
        out += page["data"]
        cursor = page.get("next_cursor")
        if not page.get("has_more"):
            return out


def batch_of(key, n, tag):
    tasks = [{"prompt": f"a lighthouse at dusk, take {i}"} for i in range(n)]
    return ok(call("POST", "/v1/batches", key, {"request_id": f"browser-{tag}", "model": "sora-2", "tasks": tasks}))


def in_page_fetch(w, method, path, csrf=None):
    """A request made by the page itself (same origin, with its cookie)."""
    return w.page.evaluate(
        """async ([method, path, csrf]) => {
             const headers = {'Content-Type': 'application/json'};
             if (csrf) headers['X-CSRF-Token'] = csrf;
             const r = await fetch(path, {method, headers, body: method === 'GET' ? undefined : '{}'});
             const b = await r.json().catch(() => null);
             return [r.status, b];
           }""",
        [method, path, csrf],
    )


def test_sign_in_refuses_a_wrong_key_keeps_the_form_and_sign_out_ends_the_session(watched, account):
    w = watched
    w.open()
    w.page.wait_for_selector("#key")
    w.page.fill("#key", "vgk_not_a_real_key")
    w.page.click("form button[type=submit]")
    w.page.wait_for_selector("#notice:not([hidden])")
    assert "unauthorized" in w.page.inner_text("#notice")
    assert w.page.input_value("#key") == "vgk_not_a_real_key", "the form keeps its input"
    w.errors.clear()  # the refused sign-in's 401, provoked on purpose

    w.page.fill("#key", account["admin"])
    w.page.click("form button[type=submit]")
    w.page.wait_for_selector("#fig-balance")
    balance = ok(call("GET", "/v1/credits", account["admin"]))["balance"]
    assert f"{balance:,}" in w.page.inner_text("#fig-balance")

    # Reloading keeps the session; signing out ends it and a reload asks again.
    w.page.reload()
    w.page.wait_for_selector("#fig-balance")
    w.page.click("#signout")
    w.page.wait_for_selector("#key")
    assert "signed out" in w.page.inner_text("#notice")
    w.page.reload()
    w.page.wait_for_selector("#key")

    # A session that ends elsewhere (another tab signs out): the next page asks again.
    sign_in(w, account["admin"])
    session = in_page_fetch(w, "GET", "/v1/console/session")[1]
    assert in_page_fetch(w, "DELETE", "/v1/console/session", session["csrf_token"])[0] == 200
    w.page.click("#nav a[data-route=ledger]")
    w.page.wait_for_selector("#key")
    assert "session has ended" in w.page.inner_text("#notice")
    w.errors.clear()  # the ended session's 401


def test_a_batch_appears_and_its_refunds_reach_the_live_ledger_without_a_reload(watched, account):
    w = watched
    w.open("#/ledger")
    sign_in(w, account["admin"])
    w.page.click("#nav a[data-route=ledger]")
    w.page.wait_for_selector("#live")
    w.page.evaluate("window.__same_page = true")
    b = batch_of(account["admin"], 30, f"live-{account['run']}")
    w.page.wait_for_selector(f"tr[data-kind=pre_deduct] >> text={b['id']}")
    # About 30 % of the simulated provider's tasks fail on this stack: refunds follow.
    w.page.wait_for_selector("tr[data-kind=refund]", timeout=180_000)
    assert w.page.evaluate("window.__same_page === true"), "the page was not reloaded"

    w.page.click("#nav a[data-route=batches]")
    w.page.wait_for_selector(f"a[href='#/batches/{b['id']}']")
    w.page.click(f"a[href='#/batches/{b['id']}']")
    w.page.wait_for_selector("#batch-status")
    w.page.wait_for_selector("#batch-status:text-is('completed')", timeout=180_000)
    bar = w.page.get_attribute(".progress", "aria-valuenow")
    assert bar == "100", bar
    api = ok(call("GET", f"/v1/batches/{b['id']}", account["admin"]))
    assert api["credits"]["refunded"] > 0
    assert f"{api['credits']['refunded']:,}" in w.page.inner_text("#batch-refunded")


def test_a_new_key_is_shown_once_and_disabling_it_stops_the_api(watched, account):
    w = watched
    w.open("#/keys")
    sign_in(w, account["admin"])
    w.page.click("#nav a[data-route=keys]")
    w.page.fill("#key-name", "made in the console")
    w.page.click("form.card button[type=submit]")
    secret = w.page.inner_text("#new-secret")
    assert secret.startswith("vgk_")
    assert ok(call("GET", "/v1/credits", secret))["balance"] >= 0

    w.page.reload()
    w.page.wait_for_selector("tr[data-key]")
    assert w.page.query_selector("#new-secret") is None
    assert secret not in w.page.content(), "a key's secret is never shown again"

    keys = ok(call("GET", "/v1/api-keys", account["admin"]))["data"]
    key_id = next(k["id"] for k in keys if k["name"] == "made in the console")
    w.page.click(f"button[data-action=disable][data-key='{key_id}']")
    w.page.wait_for_selector(f"tr[data-key='{key_id}'] td.status >> text=disabled")
    status, body = call("GET", "/v1/credits", secret)
    assert (status, body["error"]["code"]) == (401, "key_disabled")


def test_the_ledger_exported_from_the_page_has_the_apis_rows(watched, account):
    w = watched
    w.open("#/ledger")
    sign_in(w, account["admin"])
    w.page.click("#nav a[data-route=ledger]")
    w.page.wait_for_selector("tr[data-seq]")
    with w.page.expect_download(timeout=120_000) as d:
        w.page.click("#export-csv")
    rows = list(csv.DictReader(io.StringIO(open(d.value.path(), encoding="utf-8").read())))
    assert rows, "the export has rows"
    exported = {int(r["seq"]): r for r in rows}
    top = max(exported)
    api = {e["seq"]: e for e in all_ledger(account["admin"]) if e["seq"] <= top}
    assert sorted(exported) == sorted(api)
    for seq, e in api.items():
        assert int(exported[seq]["amount"]) == e["amount"], seq
        assert exported[seq]["kind"] == e["kind"], seq


def test_a_read_key_sees_no_changes_and_the_server_refuses_them_anyway(watched, account):
    b = batch_of(account["admin"], 2, f"read-{account['run']}")
    w = watched
    w.open()
    sign_in(w, account["read"])
    nav = w.page.inner_text("#nav")
    assert "API keys" not in nav and "Webhooks" not in nav
    w.page.goto(f"{API}/console#/batches/{b['id']}")
    w.page.wait_for_selector("#batch-status")
    assert w.page.query_selector("#cancel-batch") is None
    csrf = in_page_fetch(w, "GET", "/v1/console/session")[1]["csrf_token"]
    status, body = in_page_fetch(w, "POST", f"/v1/batches/{b['id']}/cancel", csrf)
    assert (status, body["error"]["code"]) == (403, "insufficient_scope")
    w.errors.clear()  # the refused call's 403, provoked on purpose


def test_changes_need_the_csrf_token_and_pages_carry_the_policy(watched, account):
    w = watched
    resp = w.page.goto(f"{API}/console")
    csp = resp.headers.get("content-security-policy", "")
    assert "script-src 'self'" in csp and "frame-ancestors 'none'" in csp
    assert resp.headers.get("x-frame-options") == "DENY"
    sign_in(w, account["admin"])
    status, body = in_page_fetch(w, "PATCH", "/v1/account")
    assert (status, body["error"]["code"]) == (403, "csrf_failed")
    w.errors.clear()


def test_an_operator_grants_a_pack_and_sees_the_balance_change(watched, account):
    w = watched
    w.open("#/operator")
    w.page.fill("#credential", OPERATOR)
    w.page.click("form button[type=submit]")
    # Found by a piece of its name (the name is half Chinese), opened from the list.
    w.page.fill("#account-id", account["run"])
    w.page.click("form.filters button[type=submit]")
    w.page.wait_for_selector(f"#search-results tr >> text={account['id']}")
    w.page.click(f"#search-results tr:has-text('{account['id']}') button")
    w.page.wait_for_selector("#op-balance")
    before = ok(call("GET", f"/admin/v1/accounts/{account['id']}", OPERATOR))["credits"]["balance"]
    w.page.select_option("#grant-pack", "pack_2000")
    w.page.fill("#grant-reason", "bought a pack (browser test)")
    w.page.click("form.card button[type=submit]")
    w.page.wait_for_selector("#notice.info:not([hidden])")
    after = ok(call("GET", f"/admin/v1/accounts/{account['id']}", OPERATOR))["credits"]["balance"]
    assert after >= before + 2000, (before, after)
    assert f"{after:,}" in w.page.inner_text("#op-balance")


CJK_RENDERS = """() => {
  const c = document.createElement('canvas');
  c.width = 80; c.height = 40;
  const x = c.getContext('2d');
  const font = getComputedStyle(document.body).fontFamily;
  const draw = (s) => { x.clearRect(0, 0, 80, 40); x.font = `28px ${font}`; x.fillText(s, 0, 30);
                        return Array.from(x.getImageData(0, 0, 80, 40).data).join(','); };
  // Two characters no font has draw as two empty boxes; real glyphs draw otherwise.
  return draw('中文') !== draw('\\u{10FFFD}\\u{10FFFC}');
}"""


def test_every_page_in_both_languages_is_captured_and_chinese_renders(watched, account):
    b = batch_of(account["admin"], 2, f"shots-{account['run']}")
    w = watched
    for lang in ("en", "zh-CN"):
        w.open("", lang)
        w.page.wait_for_selector("#key")
        w.shot("sign-in", lang)
        if lang == "zh-CN":
            assert w.page.evaluate(CJK_RENDERS), "Chinese text draws as empty boxes: install fonts-noto-cjk"
            assert "登录" in w.page.inner_text("main")
        sign_in(w, account["admin"])
        for name, route in [("overview", "overview"), ("ledger", "ledger"), ("batches", "batches"),
                            ("batch", f"batches/{b['id']}"), ("keys", "keys"), ("webhooks", "webhooks"),
                            ("exports", "exports"), ("statements", "statements"), ("sla", "sla"), ("billing", "billing"),
                            ("usage", "usage")]:
            w.page.goto(f"{API}/console#/{route}")
            w.page.wait_for_selector("main .loading", state="detached")
            w.shot(name, lang)
        if lang == "zh-CN":
            assert "额度流水" in w.page.inner_text("#nav")
        w.page.click("#signout")
        w.page.wait_for_selector("#key")
        w.page.goto(f"{API}/console#/operator")
        w.page.fill("#credential", OPERATOR)
        w.page.click("form button[type=submit]")
        w.page.wait_for_selector("#account-id")
        w.page.fill("#account-id", account["id"])
        w.page.click("form.filters button[type=submit]")
        w.page.wait_for_selector("#op-balance")
        w.shot("operator", lang)
        w.page.click("#signout")
        w.page.wait_for_selector("#credential")


def test_the_statement_and_reconciliation_agree_with_the_api(watched):
    # An account of its own: no batch of another test moves its balance meanwhile.
    _, key = fresh_account("statement")
    w = watched
    w.open()
    sign_in(w, key)
    w.page.click("#nav a[data-route=statements]")
    w.page.wait_for_selector("#closing-balance")
    month = w.page.input_value("#statement-month")
    api = ok(call("GET", f"/v1/statements/{month}", key))
    assert f"{api['closing_balance']:,}" in w.page.inner_text("#closing-balance")
    recon = ok(call("GET", "/v1/credits/reconcile", key))
    assert recon["ok"] is True
    assert w.page.query_selector("#reconcile p.ok") is not None
    w.page.click("#nav a[data-route=usage]")
    w.page.wait_for_selector("main tbody tr")


def test_an_operator_takes_a_model_out_of_service_and_back(watched, account):
    w = watched
    w.open("#/operator")
    w.page.fill("#credential", OPERATOR)
    w.page.click("form button[type=submit]")
    w.page.wait_for_selector("#model-form-veo-pro")
    try:
        w.page.select_option("#model-veo-pro", "unavailable")
        w.page.fill("#model-veo-pro-reason", "provider outage (browser test)")
        w.page.click("#model-form-veo-pro button[type=submit]")
        w.page.wait_for_selector("#model-veo-pro-now >> text=unavailable")
        status, body = call("POST", "/v1/batches", account["admin"], {
            "request_id": f"browser-veo-{account['run']}", "model": "veo-pro", "tasks": [{"prompt": "x"}]})
        assert (status, body["error"]["code"]) == (503, "model_unavailable")
        w.page.select_option("#model-veo-pro", "available")
        w.page.fill("#model-veo-pro-reason", "provider back (browser test)")
        w.page.click("#model-form-veo-pro button[type=submit]")
        w.page.wait_for_selector("#model-veo-pro-now >> text=veo-pro: available")
    finally:
        call("PUT", "/admin/v1/models/veo-pro", OPERATOR, {"status": "available", "reason": "browser test cleanup"})


def test_a_read_only_pass_shows_a_terminated_account_and_changes_nothing(watched, browser):
    acct, key = fresh_account("ended", "pack_2000")
    ok(call("POST", f"/admin/v1/accounts/{acct}/terminate", OPERATOR, {}))

    w = watched
    open_account_as_operator(w, acct)
    w.page.click("#issue-pass")
    pass_ = w.page.inner_text("#new-secret")
    assert pass_.startswith("vcp_")

    # Finance, in a browser of their own.
    ctx = browser.new_context()
    page = ctx.new_page()
    page.goto(f"{API}/console")
    page.fill("#key", pass_)
    page.click("form button[type=submit]")
    page.wait_for_selector("#banner:not([hidden])")
    page.click("#nav a[data-route=ledger]")
    page.wait_for_selector("tr[data-kind=grant]")
    nav = page.inner_text("#nav")
    assert "API keys" not in nav and "Webhooks" not in nav
    assert page.query_selector("button.danger") is None
    ctx.close()

    # The account's keys keep refusing; the pass worked once.
    status, body = call("GET", "/v1/credits", key)
    assert status in (401, 403) and body["error"]["code"] == "account_terminated", (status, body)
    status, body = call("POST", "/v1/console/sessions", pass_, {})
    assert status == 401, (status, body)


def test_the_service_level_page_shows_the_apis_report_in_both_languages(watched):
    # An account with settled work: its processing figures are on the page as the API gives them.
    _, key = fresh_account("sla")
    batch_of(key, 10, "sla")
    w = watched
    for lang in ("en", "zh-CN"):
        w.open("", lang)
        sign_in(w, key)
        w.page.click("#nav a[data-route=sla]")
        w.page.wait_for_selector("#sla-availability")
        month = w.page.input_value("#sla-month")
        api = ok(call("GET", f"/v1/sla/{month}", key))
        a = api["availability"]
        assert f"{a['availability_percent']} %" in w.page.inner_text("#sla-availability")
        sora = w.page.inner_text("#sla tr[data-model=sora-2]")
        assert "sora-2" in sora
        issued = w.page.inner_text("#sla-issued")
        if lang == "zh-CN":
            assert "服务等级" in w.page.inner_text("#nav")
            assert "月结" in issued
        else:
            assert "Not yet" in issued
        w.shot("sla-report", lang)
        w.page.click("#signout")
        w.page.wait_for_selector("#key")
    # A month that has not begun: the page says why, in the notice, and keeps the form.
    w.open()
    sign_in(w, key)
    w.page.click("#nav a[data-route=sla]")
    w.page.wait_for_selector("#sla-availability")
    w.page.fill("#sla-month", "2999-01")
    w.page.click("form.filters button[type=submit]")
    w.page.wait_for_selector("#notice:not(:empty)")
    assert "not begun" in w.page.inner_text("#notice")
    assert w.page.input_value("#sla-month") == "2999-01"
    w.errors.clear()  # the refused month's 404, provoked on purpose



def test_billing_pays_a_pack_on_the_fake_stripe_page_and_lists_its_invoice(watched):
    acct, key = fresh_account("billing")
    w = watched
    w.open()
    sign_in(w, key)
    w.page.click("#nav a[data-route=billing]")
    w.page.wait_for_selector("#billing-profile")
    assert w.page.query_selector("#invoices tr[data-invoice]") is None

    # The profile: the server's refusal shows in the notice and keeps what was typed.
    w.page.fill("#bp-company", "上海影像科技有限公司")
    w.page.fill("#bp-address", "上海市浦东新区世纪大道 100 号")
    w.page.fill("#bp-email", "finance@localhost")
    w.page.click("#bp-save")
    w.page.wait_for_selector("#notice:not(:empty)")
    assert "invalid_billing_profile" in w.page.inner_text("#notice")
    assert w.page.input_value("#bp-company") == "上海影像科技有限公司"
    w.errors.clear()  # the refused profile's 422, provoked on purpose
    w.page.fill("#bp-email", "finance@example.cn")
    w.page.click("#bp-save")
    w.page.wait_for_selector("#notice.info:not([hidden])")
    assert "Saved" in w.page.inner_text("#notice")
    assert ok(call("GET", "/v1/billing-profile", key))["billing_profile"]["company"] == "上海影像科技有限公司"

    # Buy a pack: Stripe's (fake) page, Pay, and back to the console with the Credits.
    before = ok(call("GET", "/v1/credits", key))["balance"]
    w.page.select_option("#buy-what", "pack_2000")
    w.page.click("#buy")
    w.page.wait_for_selector("#pay")
    assert "2000.00" in w.page.inner_text("#amount")
    w.page.click("#pay")
    w.page.wait_for_selector("#invoices tr[data-invoice]")
    assert "Payment received" in w.page.inner_text("#notice")
    assert ok(call("GET", "/v1/credits", key))["balance"] == before + 227_620
    number = w.page.get_attribute("#invoices tr[data-invoice]", "data-invoice")
    assert number.startswith("INV-")
    detail = ok(call("GET", f"/v1/invoices/{number}", key))
    assert detail["customer"]["company"] == "上海影像科技有限公司"
    assert detail["payment"]["method"] == "card"
    w.shot("billing", "en")

    # A pro-forma for a wire transfer, listed with its number; the page in Chinese.
    w.page.select_option("#pf-pack", "pack_5000")
    w.page.click("#pf-request")
    w.page.wait_for_selector("#pro-formas tr[data-invoice^=PF-]")
    w.page.click("#signout")
    w.page.wait_for_selector("#key")
    w.open("", "zh-CN")
    sign_in(w, key)
    w.page.click("#nav a[data-route=billing]")
    w.page.wait_for_selector("#invoices tr[data-invoice]")
    assert "账单与发票" in w.page.inner_text("#nav")
    assert "银行卡" in w.page.inner_text("#invoices")
    w.shot("billing", "zh-CN")
    pro_forma = w.page.get_attribute("#pro-formas tr[data-invoice^=PF-]", "data-invoice")
    w.page.click("#signout")
    w.page.wait_for_selector("#key")

    # The transfer arrives: the operator records it; a wrong amount is refused first.
    open_account_as_operator(w, acct)
    w.page.wait_for_selector("#wire-form")
    w.page.fill("#wire-reference", pro_forma)
    w.page.fill("#wire-amount", "4999.99")
    w.page.click("#wire-form button[type=submit]")
    w.page.wait_for_selector("#notice.error:not([hidden])")
    assert "invalid_wire_receipt" in w.page.inner_text("#notice")
    w.errors.clear()  # the refused amount's 422, provoked on purpose
    before = ok(call("GET", "/v1/credits", key))["balance"]
    w.page.fill("#wire-amount", "5000.00")
    w.page.click("#wire-form button[type=submit]")
    w.page.wait_for_selector("#notice.info:not([hidden])")
    assert ok(call("GET", "/v1/credits", key))["balance"] == before + 628_950
    paid = ok(call("GET", "/v1/invoices", key))["data"][0]
    assert paid["payment"] == {"method": "wire", "reference": pro_forma}
