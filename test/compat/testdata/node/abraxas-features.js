// A Node worker and client on abraxas for the compat tests.
// Usage: node abraxas-features.js HOST:PORT
// The worker connection (client id "abx-worker", maxJobs 3: up to three
// jobs at once on one connection) serves abx_up (upper case), abx_progress
// (status 0.5 and 1/3, sent as "50"/"100" and "33.33333333333333"/"100", a
// warning, then "done"), abx_fail (task.error) and abx_slow
// (returns its payload after 300 ms). The client runs, one after the
// other: echo; abx_up at each priority; abx_progress with its events;
// abx_fail; six abx_slow jobs at once; a background job with a unique
// polled with getStatus until it is gone; the admin commands status and
// workers on the client's own connection. It prints one JSON line.
var Gearman = require('abraxas');
var server = process.argv[2];
var opts = { servers: [server], defaultEncoding: 'utf8', maxJobs: 3 };
var worker = Gearman.Client.connect(opts);
var client = Gearman.Client.connect({ servers: [server], defaultEncoding: 'utf8' });
var out = { events: [] };
var active = 0;
var maxActive = 0;

worker.setClientId('abx-worker');
worker.registerWorker('abx_up', function (task) { return task.payload.toUpperCase(); });
worker.registerWorker('abx_progress', function (task) {
  task.status(0.5);
  task.status(1 / 3);
  task.warn('careful');
  return 'done';
});
worker.registerWorker('abx_fail', function (task) { task.error('bad input'); });
worker.registerWorker('abx_slow', function (task) {
  active++;
  if (active > maxActive) maxActive = active;
  return new Promise(function (resolve) {
    setTimeout(function () { active--; resolve(task.payload); }, 300);
  });
});
worker.registerWorker('abx_bg', function (task) {
  return new Promise(function (resolve) { setTimeout(function () { resolve('bg done'); }, 300); });
});

function step(name, fn) {
  return function () {
    return new Promise(function (resolve) {
      fn(function (value) { out[name] = value; resolve(); });
    });
  };
}

function describe(err) { return String(err && (err.message || err)); }

var steps = [
  step('echo', function (done) {
    client.echo('ping', function (err, res) { done(err ? 'error ' + describe(err) : res); });
  }),
  step('priorities', function (done) {
    var results = [];
    var prios = ['high', 'normal', 'low'];
    (function next(i) {
      if (i === prios.length) return done(results);
      var o = prios[i] === 'normal' ? {} : { priority: prios[i] };
      client.submitJob('abx_up', o, 'via ' + prios[i], function (err, res) {
        results.push(err ? 'error ' + describe(err) : res);
        next(i + 1);
      });
    })(0);
  }),
  step('progress', function (done) {
    var events = [];
    var task = client.submitJob('abx_progress', 'x');
    task.on('status', function (p) { events.push('status ' + p); });
    task.on('warn', function (w) { events.push('warn ' + w); });
    task.then(function (res) { events.push('complete ' + res); done(events); },
      function (err) { events.push('error ' + describe(err)); done(events); });
  }),
  step('fail', function (done) {
    client.submitJob('abx_fail', 'x', function (err, res) { done(err ? 'error' : 'complete ' + res); });
  }),
  step('concurrent', function (done) {
    var results = [];
    var left = 6;
    for (var i = 0; i < 6; i++) {
      client.submitJob('abx_slow', 'j' + i, function (err, res) {
        results.push(err ? 'error ' + describe(err) : res);
        if (--left === 0) { results.sort(); done({ results: results, maxActive: maxActive }); }
      });
    }
  }),
  step('background', function (done) {
    client.submitJobBg('abx_bg', { uniqueid: 'abx-u1' }, 'payload', function (err, jobid) {
      if (err) return done(['error ' + describe(err)]);
      var seen = [];
      (function poll() {
        client.getStatus(jobid, function (err, st) {
          var s = err ? 'error ' + describe(err) : 'known=' + st.known + ' running=' + st.running;
          if (seen[seen.length - 1] !== s) seen.push(s);
          if (err || !st.known) return done(seen);
          setTimeout(poll, 20);
        });
      })();
    });
  }),
  step('status', function (done) {
    client.status(function (err, st) {
      if (err) return done('error ' + describe(err));
      var fns = {};
      Object.keys(st).filter(function (f) { return f.indexOf('abx_') === 0; }).forEach(function (f) {
        fns[f] = [st[f].inqueue, st[f].running, st[f].workers];
      });
      done(fns);
    });
  }),
  step('workers', function (done) {
    client.workers(function (err, list) {
      if (err) return done('error ' + describe(err));
      done(list.filter(function (w) { return w.clientid === 'abx-worker'; })
        .map(function (w) { return w.functions.slice().sort().join(' '); }));
    });
  }),
];

steps.reduce(function (p, s) { return p.then(s); }, Promise.resolve()).then(function () {
  delete out.events;
  console.log(JSON.stringify(out));
  worker.disconnect();
  client.disconnect();
}, function (err) {
  console.error('scenario failed:', err);
  process.exit(1);
});
