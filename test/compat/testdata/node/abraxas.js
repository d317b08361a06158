// A Node worker and client on abraxas for the compat tests.
// Usage: node abraxas.js HOST:PORT
// The worker's ab_throw throws (abraxas then sends WORK_EXCEPTION and
// WORK_FAIL for the job), its ab_up returns the payload in upper case. The
// client submits ab_throw, then ab_up, and prints one JSON line:
//   {"throwErr":E,"throwRes":R,"up":U,"upErr":E2,"jobs":[...]}
// where jobs lists the worker's calls in order.
var Gearman = require('abraxas');
var server = process.argv[2];
var worker = Gearman.Client.connect({ servers: [server], defaultEncoding: 'utf8' });
var jobs = [];
worker.registerWorker('ab_throw', function () { jobs.push('ab_throw'); throw new Error('boom'); });
worker.registerWorker('ab_up', function (task) { jobs.push('ab_up'); return task.payload.toUpperCase(); });
var client = Gearman.Client.connect({ servers: [server], defaultEncoding: 'utf8' });
var out = {};
client.submitJob('ab_throw', 'x', function (err, res) {
  out.throwErr = err ? String(err.message || err) : null;
  out.throwRes = res === undefined ? null : res;
  client.submitJob('ab_up', 'next job', function (err2, res2) {
    out.upErr = err2 ? String(err2.message || err2) : null;
    out.up = res2 === undefined ? null : res2;
    out.jobs = jobs;
    console.log(JSON.stringify(out));
    worker.disconnect();
    client.disconnect();
  });
});
