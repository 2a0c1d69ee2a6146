// A real socket.io-client v4, unchanged, for the end-to-end tests.
// usage: node sio.mjs <url>   (io() options as JSON in SIO_OPTS)
// Prints one JSON line per thing the client sees:
//   {"connect":true,"id":..,"recovered":bool,"transport":..}  {"connect_error":msg,"data":..}
//   {"disconnect":reason}  {"event":name,"args":[..]}  {"ack":n,"args":[..]}  {"upgrade":transport}
// and reads one JSON command per line on stdin:
//   {"emit":name,"data":x,"ack":n}  emit, with a callback printing {"ack":n,...} when ack is set
//   {"connect":true}  {"disconnect":true}  {"blip":true} (the engine's transport dies: the client reconnects)
//   {"auth":{...}}  replace the auth sent at the next connect
import { io } from 'socket.io-client';
import readline from 'node:readline';

const [url] = process.argv.slice(2);
const opts = JSON.parse(process.env.SIO_OPTS || '{}');
const print = (m) => console.log(JSON.stringify(m));
const socket = io(url, { reconnectionDelay: 100, reconnectionDelayMax: 500, ...opts });

socket.on('connect', () => print({ connect: true, id: socket.id, recovered: socket.recovered, transport: socket.io.engine.transport.name }));
socket.on('connect_error', (err) => print({ connect_error: err.message, data: err.data ?? null }));
socket.on('disconnect', (reason) => print({ disconnect: reason }));
socket.onAny((event, ...args) => print({ event, args }));
socket.io.on('open', () => socket.io.engine.on('upgrade', (t) => print({ upgrade: t.name })));

readline.createInterface({ input: process.stdin }).on('line', (line) => {
  const cmd = JSON.parse(line);
  if (cmd.emit !== undefined) {
    const args = 'data' in cmd ? [cmd.data] : [];
    if (cmd.ack !== undefined) args.push((...res) => print({ ack: cmd.ack, args: res }));
    socket.emit(cmd.emit, ...args);
  } else if (cmd.auth) {
    socket.auth = cmd.auth;
  } else if (cmd.connect) {
    socket.connect();
  } else if (cmd.disconnect) {
    socket.disconnect();
  } else if (cmd.blip) {
    socket.io.engine.close();
  }
}).on('close', () => process.exit(0));
