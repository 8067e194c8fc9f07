// Node `ws` peer of the benchmarks: echo every message, text as text, binary as binary.
//   NODE_PATH=/usr/share/nodejs node bench/peers/node_echo.js PORT
'use strict';
const { WebSocketServer } = require('ws');

const port = Number(process.argv[2] || 8090);
const wss = new WebSocketServer({
  host: '127.0.0.1',
  port,
  perMessageDeflate: false,
  maxPayload: 64 * 1024 * 1024,
  backlog: 4096,
});
wss.on('connection', (ws) => {
  ws.on('message', (data, isBinary) => ws.send(data, { binary: isBinary }));
  ws.on('error', () => {});
});
wss.on('listening', () => console.log(`node ws echo on 127.0.0.1:${port}`));
