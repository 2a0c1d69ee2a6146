// Signs a webhook with the `standardwebhooks` package, as an app would, and
// posts it. usage: node webhook.mjs <url> <secret> <msgId> <json body>
// Prints {"status": n, "body": {...}}.
import { Webhook } from 'standardwebhooks';

const [url, secret, msgId, body] = process.argv.slice(2);
const now = new Date();
const signature = new Webhook(secret).sign(msgId, now, body);
const res = await fetch(url, {
  method: 'POST',
  headers: {
    'content-type': 'application/json',
    'webhook-id': msgId,
    'webhook-timestamp': String(Math.floor(now.getTime() / 1000)),
    'webhook-signature': signature,
  },
  body,
});
console.log(JSON.stringify({ status: res.status, body: await res.json() }));
