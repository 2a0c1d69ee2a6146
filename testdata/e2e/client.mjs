// A real WebSocket client (the `ws` package) for the end-to-end tests.
// usage: node client.mjs <url> <messages> [timeoutMs] [protocols,...]
// Prints {"open":true} once connected, then each server frame as one JSON
// line, and exits 0 after <messages> frames, or 2 on timeout, or 3 on close.
// SEND_ON_OPEN, if set, is a JSON array of messages sent once open.
import WebSocket from 'ws';

const [url, want, timeoutMs = '10000', protocols] = process.argv.slice(2);
const ws = new WebSocket(url, protocols ? protocols.split(',') : undefined);
let got = 0;
const timer = setTimeout(() => { console.log(JSON.stringify({ timeout: true, got })); process.exit(2); }, Number(timeoutMs));
ws.on('open', () => {
  console.log(JSON.stringify({ open: true, protocol: ws.protocol }));
  for (const m of JSON.parse(process.env.SEND_ON_OPEN || '[]')) ws.send(JSON.stringify(m));
});
ws.on('message', (data) => {
  console.log(data.toString());
  if (++got >= Number(want)) { clearTimeout(timer); ws.close(1000); }
});
ws.on('close', (code) => {
  clearTimeout(timer);
  console.log(JSON.stringify({ closed: code }));
  process.exit(got >= Number(want) ? 0 : 3);
});
ws.on('unexpected-response', (req, res) => { console.log(JSON.stringify({ status: res.statusCode })); process.exit(4); });
ws.on('error', (err) => { console.log(JSON.stringify({ error: String(err) })); });
