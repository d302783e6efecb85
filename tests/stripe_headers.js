// Stripe-Signature headers from Stripe's own Node library (infra/node, pinned), so our
// verification is checked against an implementation that is not ours, both ways.
// Reads {"sign": [{payload, secret, timestamp}], "verify": [{payload, header, secret, now}]}
// on stdin; prints {"headers": [...], "verdicts": ["ok" | the library's error, ...]}.
const path = require('path');
const Stripe = require(path.join(__dirname, '..', 'infra', 'node', 'node_modules', 'stripe'));

const stripe = new Stripe('sk_test_not_used');
let input = '';
process.stdin.on('data', (c) => { input += c; });
process.stdin.on('end', () => {
  const req = JSON.parse(input);
  const headers = req.sign.map((c) => stripe.webhooks.generateTestHeaderString({
    payload: c.payload, secret: c.secret, timestamp: c.timestamp,
  }));
  const verdicts = req.verify.map((c) => {
    try {
      // receivedAt (ms) stands in for the clock, so a test's manual time can be checked.
      stripe.webhooks.constructEvent(c.payload, c.header, c.secret, 300, undefined, c.now * 1000);
      return 'ok';
    } catch (e) {
      return `${e.type || e.name}: ${e.message.split('\n')[0]}`;
    }
  });
  process.stdout.write(JSON.stringify({ headers, verdicts }));
});
