// Minimal broadcast server on the npm `ws` package, the node peer that
// tools/bench/run measures parley against. A connection joins the room named
// by the `room` query parameter (default: one shared room); every text
// message is sent, unchanged, to every connection of that room, the sender's
// included, as parley's rooms and the lws mirror do.
//
// Usage: node server.js [--host 127.0.0.1] [--port 8081]
// Listens on loopback only unless --host says otherwise; exits on SIGINT/SIGTERM.
'use strict';

const { WebSocketServer } = require('ws');

function arg(name, dflt) {
  const i = process.argv.indexOf(name);
  return i > 0 && i + 1 < process.argv.length ? process.argv[i + 1] : dflt;
}

const host = arg('--host', '127.0.0.1');
const port = Number(arg('--port', '8081'));
const rooms = new Map(); // room name -> Set of sockets

const wss = new WebSocketServer({ host, port, perMessageDeflate: false, clientTracking: false });

wss.on('connection', (ws, req) => {
  const q = req.url.indexOf('?');
  const room = q >= 0 ? new URLSearchParams(req.url.slice(q + 1)).get('room') || '' : '';
  let members = rooms.get(room);
  if (!members) {
    members = new Set();
    rooms.set(room, members);
  }
  members.add(ws);
  ws.on('message', (data, isBinary) => {
    for (const m of members) m.send(data, { binary: isBinary });
  });
  ws.on('close', () => {
    members.delete(ws);
    if (members.size === 0) rooms.delete(room);
  });
  ws.on('error', () => {});
});

wss.on('listening', () => {
  process.stdout.write(`listening on ${host}:${port}\n`);
});

const stop = () => {
  wss.close();
  process.exit(0);
};
process.on('SIGINT', stop);
process.on('SIGTERM', stop);
