// Node + Express peer: the classic tutorial server, broadcasting to a Set of
// responses. Same bytes as every peer: `data: <CLOCK_MONOTONIC ns> <seq> <pad>\n\n`.
// process.hrtime.bigint() is CLOCK_MONOTONIC on Linux, the load generator's clock.
"use strict";
const express = require("express");

function arg(name, fallback) {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 ? process.argv[i + 1] : fallback;
}
const port = Number(arg("port", "8000"));
const rate = Number(arg("rate", "10"));
const pad = "x".repeat(Number(arg("padding", "64")));
const host = arg("host", "127.0.0.1");

const clients = new Set();
const app = express();

app.get("/sub", (req, res) => {
  res.writeHead(200, {
    "Content-Type": "text/event-stream",
    "Cache-Control": "no-cache",
    Connection: "keep-alive",
  });
  res.flushHeaders();
  clients.add(res);
  req.on("close", () => clients.delete(res));
});

// Absolute schedule: a late tick is published at once, not skipped.
const periodNs = BigInt(Math.round(1e9 / rate));
let next = process.hrtime.bigint() + periodNs;
let seq = 0;
function tick() {
  seq += 1;
  const line = `data: ${process.hrtime.bigint()} ${seq} ${pad}\n\n`;
  for (const res of clients) res.write(line);
  next += periodNs;
  const delayMs = Number(next - process.hrtime.bigint()) / 1e6;
  setTimeout(tick, delayMs > 0 ? delayMs : 0);
}
setTimeout(tick, Number(periodNs) / 1e6);

const server = app.listen(port, host, 4096);
server.keepAliveTimeout = 0;
server.requestTimeout = 0;
