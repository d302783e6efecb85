// English and Simplified Chinese. Numbers, dates (with the time zone) and US$ amounts are
// formatted for the chosen locale by the browser's Intl, so nothing here is hand-formatted.

const en = {
  brand: 'Video Credits Console',
  language: 'Language',
  loading: 'Loading…',
  sign_in: 'Sign in',
  sign_out: 'Sign out',
  sign_in_title: 'Sign in to your account',
  sign_in_help: 'Paste an API key of your account (or a read-only pass from your account manager). The console offers what the key’s scopes allow; the key itself is not kept in the browser.',
  operator_sign_in: 'Operator sign-in',
  operator_help: 'Paste your named operator credential.',
  api_key: 'API key',
  credential: 'Operator credential',
  signed_out: 'You have signed out.',
  session_ended: 'Your session has ended. Please sign in again.',
  nav_overview: 'Overview',
  nav_ledger: 'Credits Ledger',
  nav_batches: 'Batches',
  nav_keys: 'API keys',
  nav_webhooks: 'Webhooks',
  nav_exports: 'Exports',
  balance: 'Balance',
  held: 'Held by running batches',
  lifetime_granted: 'Granted (lifetime)',
  lifetime_charged: 'Charged (lifetime)',
  lifetime_refunded: 'Refunded (lifetime)',
  lifetime_released: 'Released (lifetime)',
  low_balance: 'Low-balance alert below',
  not_set: 'not set',
  running_batches: 'Batches running now',
  latest_refunds: 'Latest refunds',
  none_yet: 'Nothing here yet.',
  credits: 'credits',
  live: 'Live',
  paused: 'Paused',
  kind: 'Kind',
  all: 'All',
  from: 'From',
  to: 'To',
  apply: 'Apply',
  when: 'When',
  amount: 'Amount',
  balance_after: 'Balance after',
  batch: 'Batch',
  task: 'Task',
  reason: 'Reason',
  more: 'Load more',
  export_csv: 'Export CSV',
  export_json: 'Export JSON',
  export_preparing: 'Preparing the export…',
  export_ready: 'Export ready: downloading.',
  kind_grant: 'Grant',
  kind_pre_deduct: 'Pre-deduction',
  kind_refund: 'Refund',
  kind_release: 'Release',
  kind_adjustment: 'Adjustment',
  kind_compensation: 'Compensation',
  status: 'Status',
  model: 'Model',
  progress: 'Progress',
  created: 'Created',
  started: 'Started',
  ended: 'Ended',
  tasks: 'Tasks',
  charged: 'Charged',
  refunded: 'Refunded',
  released: 'Released',
  cancel_batch: 'Cancel batch',
  cancel_confirm: 'Cancel this batch? Tasks already sent to a provider ({running}) are charged; the {queued} queued tasks are released back to your balance.',
  cancel_requested: 'Cancellation requested.',
  error: 'Error',
  back: 'Back',
  name: 'Name',
  scopes: 'Scopes',
  rate_limit: 'Requests per minute',
  allowlist: 'IP allowlist (one CIDR per line)',
  expires: 'Expires',
  create_key: 'Create key',
  key_created: 'Your new key. It is shown once: copy it now.',
  copy: 'Copy',
  copied: 'Copied.',
  enable: 'Enable',
  disable: 'Disable',
  revoke: 'Revoke',
  revoke_confirm: 'Revoke this key? Calls with it stop at once, for good.',
  read_only: 'This key can read only; changes are not offered.',
  endpoints: 'Endpoints',
  url: 'URL',
  add_endpoint: 'Add endpoint',
  secret_once: 'Signing secret, shown once: copy it now.',
  rotate_secret: 'Rotate secret',
  deliveries: 'Deliveries',
  attempts: 'Attempts',
  dataset: 'Dataset',
  format: 'Format',
  download: 'Download',
  create_export: 'Create export',
  saved: 'Saved.',
  network_error: 'The server could not be reached. Nothing was changed; try again.',
  opening_balance: 'Opening balance',
  closing_balance: 'Closing balance',
  printable: 'Printable statement',
  reconciliation: 'Reconciliation',
  reconciles: 'The balance equals the sum of the ledger, and every batch’s credits add up.',
  does_not_reconcile: 'Differences found: see below. Our operators are told as well.',
  ledger_sum: 'Sum of the ledger',
  ledger_entries: 'Ledger entries',
  nav_statements: 'Statements',
  nav_usage: 'Usage log',
  month: 'Month',
  redeliver: 'Redeliver',
  redelivery_queued: 'Redelivery queued.',
  recover: 'Redeliver failed since',
  recover_since: 'Failed deliveries since',
  operator: 'Operator',
  account_id: 'Account ID',
  account_search: 'Account ID or name',
  search: 'Search',
  narrow_search: 'More accounts match: type more of the name.',
  open: 'Open',
  grant: 'Grant',
  pack: 'Pack',
  adjust: 'Adjust',
  terms: 'Contract terms',
  retention_days: 'Retention (days)',
  max_concurrency: 'Concurrent tasks',
  request_budget: 'Requests per minute (account)',
  terminate: 'Terminate',
  reinstate: 'Reinstate',
  terminate_confirm: 'Terminate this account? Its keys stop at once; batches already created finish.',
  models: 'Models',
  model_available: 'available',
  model_unavailable: 'unavailable',
  reconcile_all: 'Reconcile every account',
  reconcile_summary: '{checked} accounts checked; {bad} with differences.',
  issue_pass: 'Issue a read-only console pass',
  pass_once: 'The pass, shown once: it opens one read-only session, until {until}. Hand it to the customer’s finance team.',
  read_only_pass: 'read-only pass',
  read_only_banner: 'Read-only: this account’s contract has ended. You can see the ledger, statements, exports and batches; nothing can be changed, and the account’s API keys no longer work.',
};

const zh = {
  brand: '视频额度控制台',
  language: '语言',
  loading: '加载中…',
  sign_in: '登录',
  sign_out: '退出登录',
  sign_in_title: '登录您的账户',
  sign_in_help: '粘贴您账户的一个 API 密钥（或客户经理提供的只读通行证）。控制台只提供该密钥权限范围内的操作；浏览器不会保存密钥本身。',
  operator_sign_in: '运营人员登录',
  operator_help: '粘贴您的具名运营凭证。',
  api_key: 'API 密钥',
  credential: '运营凭证',
  signed_out: '您已退出登录。',
  session_ended: '您的会话已结束，请重新登录。',
  nav_overview: '概览',
  nav_ledger: '额度流水',
  nav_batches: '批次',
  nav_keys: 'API 密钥',
  nav_webhooks: 'Webhook',
  nav_exports: '导出',
  balance: '余额',
  held: '运行中批次预扣',
  lifetime_granted: '累计充值',
  lifetime_charged: '累计扣费',
  lifetime_refunded: '累计退款',
  lifetime_released: '累计释放',
  low_balance: '余额提醒阈值',
  not_set: '未设置',
  running_batches: '正在运行的批次',
  latest_refunds: '最近退款',
  none_yet: '暂无记录。',
  credits: '额度',
  live: '实时',
  paused: '已暂停',
  kind: '类型',
  all: '全部',
  from: '开始',
  to: '结束',
  apply: '应用',
  when: '时间',
  amount: '数额',
  balance_after: '变动后余额',
  batch: '批次',
  task: '任务',
  reason: '原因',
  more: '加载更多',
  export_csv: '导出 CSV',
  export_json: '导出 JSON',
  export_preparing: '正在生成导出文件…',
  export_ready: '导出完成，正在下载。',
  kind_grant: '充值',
  kind_pre_deduct: '预扣',
  kind_refund: '退款',
  kind_release: '释放',
  kind_adjustment: '调整',
  kind_compensation: '补偿',
  status: '状态',
  model: '模型',
  progress: '进度',
  created: '创建时间',
  started: '开始时间',
  ended: '结束时间',
  tasks: '任务',
  charged: '已扣费',
  refunded: '已退款',
  released: '已释放',
  cancel_batch: '取消批次',
  cancel_confirm: '确定取消该批次？已发送给模型服务商的任务（{running} 个）将照常扣费；排队中的 {queued} 个任务将释放回您的余额。',
  cancel_requested: '已提交取消请求。',
  error: '错误',
  back: '返回',
  name: '名称',
  scopes: '权限范围',
  rate_limit: '每分钟请求数',
  allowlist: 'IP 白名单（每行一个 CIDR）',
  expires: '过期时间',
  create_key: '创建密钥',
  key_created: '您的新密钥只显示这一次，请立即复制。',
  copy: '复制',
  copied: '已复制。',
  enable: '启用',
  disable: '停用',
  revoke: '吊销',
  revoke_confirm: '确定吊销该密钥？使用它的调用将立即且永久失效。',
  read_only: '此密钥只有读取权限，不提供修改操作。',
  endpoints: '接收端点',
  url: 'URL',
  add_endpoint: '添加端点',
  secret_once: '签名密钥只显示这一次，请立即复制。',
  rotate_secret: '轮换签名密钥',
  deliveries: '投递记录',
  attempts: '尝试',
  dataset: '数据集',
  format: '格式',
  download: '下载',
  create_export: '创建导出',
  saved: '已保存。',
  network_error: '无法连接服务器。没有任何更改，请重试。',
  opening_balance: '期初余额',
  closing_balance: '期末余额',
  printable: '可打印对账单',
  reconciliation: '对账',
  reconciles: '余额等于流水合计，每个批次的额度都能对上。',
  does_not_reconcile: '发现差异，详见下方；运营人员也会收到通知。',
  ledger_sum: '流水合计',
  ledger_entries: '流水条数',
  nav_statements: '对账单',
  nav_usage: '调用日志',
  month: '月份',
  redeliver: '重新投递',
  redelivery_queued: '已加入重新投递队列。',
  recover: '重新投递此后的失败记录',
  recover_since: '起始时间',
  operator: '运营人员',
  account_id: '账户 ID',
  account_search: '账户 ID 或名称',
  search: '搜索',
  narrow_search: '匹配的账户较多，请输入更完整的名称。',
  open: '打开',
  grant: '充值',
  pack: '套餐',
  adjust: '调整',
  terms: '合同条款',
  retention_days: '数据保留（天）',
  max_concurrency: '并发任务数',
  request_budget: '每分钟请求数（账户）',
  terminate: '终止合同',
  reinstate: '恢复账户',
  terminate_confirm: '确定终止该账户？其密钥立即失效；已创建的批次会继续完成。',
  models: '模型',
  model_available: '可用',
  model_unavailable: '不可用',
  reconcile_all: '核对所有账户',
  reconcile_summary: '已核对 {checked} 个账户；{bad} 个存在差异。',
  issue_pass: '签发只读控制台通行证',
  pass_once: '通行证只显示这一次：可打开一次只读会话，有效期至 {until}。请交给客户的财务人员。',
  read_only_pass: '只读通行证',
  read_only_banner: '只读：该账户的合同已终止。您可以查看额度流水、对账单、导出和批次；无法进行任何修改，该账户的 API 密钥也已失效。',
};

// Statuses as the API names them: English shows them as words, Chinese translates them.
const statusZh = {
  accepted: '已接受', queued: '排队中', running: '运行中', completed: '已完成', succeeded: '成功',
  failed: '失败', rejected: '已拒绝', timed_out: '超时', cancelled: '已取消', released: '已释放',
  active: '有效', disabled: '已停用', expired: '已过期', revoked: '已吊销', terminated: '已终止',
  pending: '待投递', total: '总数',
};

export function status(s) {
  if (locale === 'zh-CN' && statusZh[s]) return statusZh[s];
  return String(s).replace(/_/g, ' ');
}

const dictionaries = { en, 'zh-CN': zh };
let locale = 'en';

export function setLocale(l) {
  locale = dictionaries[l] ? l : 'en';
  document.documentElement.lang = locale;
  try {
    localStorage.setItem('console.locale', locale);
  } catch {
    // storage may be off: the choice then lasts for this page only
  }
}

export function initialLocale() {
  let saved = null;
  try {
    saved = localStorage.getItem('console.locale');
  } catch {
    saved = null;
  }
  if (saved && dictionaries[saved]) return saved;
  return (navigator.language || '').toLowerCase().startsWith('zh') ? 'zh-CN' : 'en';
}

export function getLocale() {
  return locale;
}

export function t(key, vars) {
  let s = dictionaries[locale][key] ?? en[key] ?? key;
  for (const [k, v] of Object.entries(vars || {})) s = s.replace(`{${k}}`, v);
  return s;
}

export function num(n) {
  return new Intl.NumberFormat(locale).format(n);
}

// Credits are US cents: 1 credit = US$0.01.
export function usd(credits) {
  return new Intl.NumberFormat(locale, { style: 'currency', currency: 'USD' }).format(credits / 100);
}

export function when(iso) {
  if (!iso) return '—';
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return iso;
  return new Intl.DateTimeFormat(locale, {
    year: 'numeric', month: '2-digit', day: '2-digit',
    hour: '2-digit', minute: '2-digit', second: '2-digit', timeZoneName: 'short',
  }).format(d);
}

// Every element with data-t gets its text in the current language.
export function translate(root) {
  for (const el of root.querySelectorAll('[data-t]')) el.textContent = t(el.dataset.t);
}
