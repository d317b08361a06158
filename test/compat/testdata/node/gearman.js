// A scenario on the npm package gearman 2.1.0 (client and worker), run by
// TestNpmGearmanScenario: node gearman.js HOST:PORT. It prints one JSON
// object of what the client and the worker saw.
'use strict';
const gearman = require('gearman');

const i = process.argv[2].lastIndexOf(':');
const host = process.argv[2].slice(0, i);
const port = Number(process.argv[2].slice(i + 1));
const out = { events: [], worker: [] };
const fail = (why) => {
  process.stderr.write('gearman.js: ' + why + '\n' + JSON.stringify(out) + '\n');
  process.exit(1);
};
setTimeout(() => fail('timed out'), 60000).unref();

// The worker registers "upper" with a timeout, which this library sends
// as a binary number, and "stream" without one.
const worker = gearman(host, port, {});
worker.on('ERROR', (code, msg) => fail('worker got ERROR ' + code + ' ' + msg));
worker.on('NOOP', () => worker.grabUniqueJob());
worker.on('NO_JOB', () => worker.preSleep());
worker.on('JOB_ASSIGN_UNIQ', job => {
  out.worker.push(job.func_name + ' ' + job.unique_id + ' ' + job.payload);
  if (job.func_name === 'upper') {
    worker.sendWorkComplete(job.handle, job.payload.toString().toUpperCase());
  } else if (job.payload.toString() === 'explode') {
    worker.sendWorkException(job.handle, 'exploded');
  } else {
    worker.sendWorkData(job.handle, 'part');
    worker.sendWorkStatus(job.handle, '1', '2');
    worker.sendWorkWarning(job.handle, 'careful');
    worker.sendWorkComplete(job.handle, 'done');
  }
  worker.grabUniqueJob();
});

const client = gearman(host, port, {});
const steps = [];
let handles = {};
const ev = (s) => { out.events.push(s); next(); };
client.on('ERROR', (code, msg) => fail('client got ERROR ' + code + ' ' + msg));
client.on('ECHO_RES', d => ev('echo ' + d));
client.on('OPTION_RES', o => ev('option ' + o.option_name));
client.on('JOB_CREATED', h => { handles.last = h; ev('created'); });
client.on('WORK_DATA', j => out.events.push('data ' + j.payload));
client.on('WORK_STATUS', j => out.events.push('status ' + j.percent_num + '/' + j.percent_den));
client.on('WORK_WARNING', j => out.events.push('warning ' + j.warning));
client.on('WORK_COMPLETE', j => ev('complete ' + j.payload));
client.on('WORK_FAIL', () => ev('fail'));
client.on('WORK_EXCEPTION', j => ev('exception ' + j.exception));
client.on('STATUS_RES', s => ev('status_res known=' + s.known + ' running=' + s.running));
client.on('STATUS_RES_UNIQUE', s => ev('status_res_unique ' + s.unique_id + ' known=' + s.known));

// Each step sends one request; the next runs once its answer (or, for a
// foreground job, its result) is in.
let waitFor = 0;
function next() {
  if (--waitFor > 0) { return; }
  const step = steps.shift();
  if (!step) {
    process.stdout.write(JSON.stringify(out) + '\n');
    process.exit(0);
  }
  waitFor = step[0];
  step[1]();
}
steps.push(
  [1, () => client.echo('ping')],
  [2, () => client.submitJob('upper', 'hello', { unique_id: 'u-1', priority: 'high' })],
  [2, () => client.submitJob('stream', 'go', { priority: 'low' })],
  [1, () => client.setOption('exceptions')],
  [2, () => client.submitJob('stream', 'explode')],
  [1, () => client.submitJob('nobody', 'later', { background: true, unique_id: 'bg-1' })],
  [1, () => client.getJobStatus(handles.last)],
  [1, () => client.getJobStatusUnique('bg-1')],
);

worker.connect(() => {
  worker.addFunction('upper', 5);
  worker.addFunction('stream');
  worker.setWorkerId('npm-gearman');
  worker.preSleep();
  client.connect(() => { waitFor = 1; next(); });
});
