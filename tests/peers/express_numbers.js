// An Express peer for the client interop tests (run as a subprocess).
// GET /numbers: like tests/peers/aiohttp_numbers.py (two named events after
// Last-Event-ID, two-line data, `retry: 10`; ends, or stays open with ?hold=1).
// Prints the port once listening. Usage: node express_numbers.js PORT
// Express comes from benchmarks/node (npm install --prefix benchmarks/node).
"use strict";
const path = require("path");
const express = require(path.join(__dirname, "..", "..", "benchmarks", "node", "node_modules", "express"));

const app = express();
app.get("/numbers", (req, res) => {
  const last = req.get("Last-Event-ID");
  const start = Number(last || 0);
  res.writeHead(200, { "Content-Type": "text/event-stream", "Cache-Control": "no-cache" });
  let out = "retry: 10\n";
  for (let n = start + 1; n <= start + 2; n++) {
    out += `event: number\nid: ${n}\ndata: n${n}\ndata: after ${last || "-"}\n\n`;
  }
  res.write(out);
  if (!req.query.hold) res.end();
});
const server = app.listen(Number(process.argv[2] || 0), "127.0.0.1", () => {
  console.log(server.address().port);
});
