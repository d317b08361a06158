// A Node worker and client on gearman-node (Clever's, npm) for the compat
// tests. Usage: node gearman-node.js HOST PORT
// A worker for gn_up (upper case) and one registered with a 1000 ms
// timeout (CAN_DO_TIMEOUT) for gn_slow, whose job takes three seconds.
// The client submits gn_up and gn_slow, then writes "restart" to stderr and
// waits for a line on stdin (the server restarts on its address
// meanwhile); the library reconnects both, and the client submits gn_up
// again. It prints one JSON line: {"events":[...]} with each job's events
// in order, and "restart" where the restart came.
var gearman = require('gearman-node');
var readline = require('readline');
var options = { host: process.argv[2], port: Number(process.argv[3]), debug: false };
var events = [];

var up = new gearman.Worker('gn_up', function (payload, w) {
  w.complete(String(payload).toUpperCase());
}, options);
var slow = new gearman.Worker('gn_slow', function (payload, w) {
  setTimeout(function () { w.complete('too late'); }, 3000);
}, Object.assign({}, options, { timeout: 1000 }));
var client = new gearman.Client(options);

function submit(fn, payload, next) {
  client.submitJob(fn, payload)
    .on('complete', function (handle, data) { events.push(fn + ' complete ' + data); next(); })
    .on('fail', function () { events.push(fn + ' fail'); next(); })
    .on('warning', function (handle, w) { events.push(fn + ' warning ' + w); });
}

function finish() {
  console.log(JSON.stringify({ events: events }));
  up.disconnect();
  slow.disconnect();
  client.disconnect();
  // reconnect-net's timers would keep the process alive.
  setTimeout(function () { process.exit(0); }, 100);
}

// Both workers must have registered before the first job: the client's
// first job is submitted once each worker's connection is up.
var ready = 0;
function start() {
  if (++ready < 2) return;
  submit('gn_up', 'hello', function () {
    submit('gn_slow', 'x', function () {
      process.stderr.write('restart\n');
      var rl = readline.createInterface({ input: process.stdin });
      rl.once('line', function () {
        rl.close();
        events.push('restart');
        submit('gn_up', 'again', finish);
      });
    });
  });
}
up.once('connect', start);
slow.once('connect', start);
