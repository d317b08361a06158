// A scenario on the npm package gearman-node-bda (a fork of gearmanode
// whose worker grabs only when told to, with grabJob(n) sending n
// GRAB_JOBs at once, and sends GRAB_JOB again after each job it ends), run
// by TestGearmanNodeBdaScenario: node gearman-node-bda.js HOST:PORT
// [nofail]. It prints one JSON object of what the clients and the worker
// saw. With "nofail" the jobs that end in WORK_FAIL are left out (gearmand
// 1.1.20 sends that packet with a NUL after the handle, which this library
// takes for a job it does not know, so they never end).
'use strict';
const gearmanode = require('gearman-node-bda');

const arg = process.argv[2];
const server = { host: arg.slice(0, arg.lastIndexOf(':')), port: Number(arg.slice(arg.lastIndexOf(':') + 1)) };
const withFail = process.argv[3] !== 'nofail';
const out = { option: '', held: [], maxHeld: 0, jobs: {}, runs: {}, echo: '', background: [], keep: '', afterReset: '', workerErrors: [] };
const fail = (why) => {
  process.stderr.write('gearman-node-bda.js: ' + why + '\n' + JSON.stringify(out) + '\n');
  process.exit(1);
};
setTimeout(() => fail('timed out'), 80000).unref();

const client = gearmanode.client({ servers: [server] });
client.on('error', e => fail('client error: ' + e));

// submit submits a job and resolves with the events its client saw.
function submit(c, name, payload, options) {
  return new Promise(resolve => {
    const ev = [];
    const job = c.submitJob(name, payload, Object.assign({ toStringEncoding: 'utf8' }, options));
    if (job instanceof Error) { fail(name + ': ' + job); }
    job.on('workData', d => ev.push('data:' + d));
    job.on('warning', d => ev.push('warning:' + d));
    job.on('status', s => ev.push('status:' + s.percent_done_num + '/' + s.percent_done_den));
    job.on('complete', () => { ev.push('complete:' + job.response); resolve(ev); });
    job.on('failed', () => { ev.push('failed'); resolve(ev); });
    job.on('exception', d => { ev.push('exception:' + d); resolve(ev); });
    job.on('timeout', () => { ev.push('timeout'); resolve(ev); });
    job.on('error', e => { ev.push('error:' + e); resolve(ev); });
  });
}

// submitBackground resolves with the job once the server has created it.
function submitBackground(name, payload, options) {
  return new Promise(resolve => {
    const job = client.submitJob(name, payload, Object.assign({ background: true }, options));
    if (job instanceof Error) { fail(name + ': ' + job); }
    job.on('created', () => resolve(job));
  });
}

// status resolves with one GET_STATUS answer for a background job.
function status(job) {
  return new Promise(resolve => {
    job.once('status', s => resolve((s.known ? 'known' : 'unknown') + (s.running ? ' running' : '')));
    job.getStatus();
  });
}

const run = (name) => { out.runs[name] = (out.runs[name] || 0) + 1; };
let worker;
// held are the "held" jobs the worker has; it ends them once it holds all
// three at once, which only three GRAB_JOBs in flight give it.
let held = [];
let heldDone;
const allHeldDone = new Promise(resolve => { heldDone = resolve; });

function startWorker() {
  worker = gearmanode.worker({ servers: [server] });
  worker.on('error', e => fail('worker error: ' + e));
  worker.setWorkerId('bda-worker');
  worker.addFunction('held', job => {
    run('held');
    held.push(job);
    out.held.push(String(job.payload));
    out.maxHeld = Math.max(out.maxHeld, held.length);
    if (held.length === 3) {
      const jobs = held;
      held = [];
      jobs.forEach(j => j.workComplete(''));
      heldDone();
    }
  });
  worker.addFunction('upper', job => { run('upper'); job.workComplete(job.payload.toString().toUpperCase()); });
  worker.addFunction('progress', job => {
    run('progress');
    job.sendWorkData('part');
    job.reportStatus(1, 2);
    job.reportWarning('careful');
    job.reportStatus(2, 2);
    job.workComplete('done');
  });
  worker.addFunction('fail', job => { run('fail'); job.reportError(); });
  worker.addFunction('exception', job => { run('exception'); job.reportException('broken'); });
  // "coalesce" waits until both of its clients' submits are known, so that
  // the second is joined to the running job.
  worker.addFunction('coalesce', job => {
    run('coalesce');
    const done = () => coalesceSubmitted ? job.workComplete('once') : setTimeout(done, 20);
    done();
  }, { toStringEncoding: 'utf8' });
  worker.addFunction('keep', job => { run('keep'); keepReady(job); });
  worker.on('jobServerError', (uid, code) => out.workerErrors.push(code));
  worker.grabJob(3);
}
let keepReady;
const keepHeld = new Promise(resolve => { keepReady = resolve; });

// workerEcho resolves once the server has answered an ECHO on the
// worker's connection, so has read everything the worker sent before.
function workerEcho(tag) {
  return new Promise(resolve => {
    const js = worker.jobServers[0];
    js.once('echo', () => resolve());
    js.echo(tag);
  });
}
let coalesceSubmitted = false;

// created resolves once a client holds a created job of the function.
function created(c, name) {
  return new Promise(resolve => {
    const check = () => Object.values(c.jobs).some(j => j.name === name) ? resolve() : setTimeout(check, 10);
    check();
  });
}

function echo() {
  return new Promise(resolve => {
    const js = client.jobServers[0];
    js.once('echo', d => { out.echo = d.toString(); resolve(); });
    js.echo('ping');
  });
}

(async () => {
  await echo();
  // Three background jobs, lowest priority first, before any worker.
  await submitBackground('held', 'low', { priority: 'LOW' });
  await submitBackground('held', 'normal', { priority: 'NORMAL' });
  const last = await submitBackground('held', 'high', { priority: 'HIGH' });
  out.background.push(await status(last));
  startWorker();
  await allHeldDone;
  // The background job is gone once its WORK_COMPLETE is read.
  for (;;) {
    const st = await status(last);
    if (out.background[out.background.length - 1] !== st) { out.background.push(st); }
    if (st === 'unknown') { break; }
    await new Promise(r => setTimeout(r, 20));
  }
  out.jobs.upper = await submit(client, 'upper', 'hello');
  out.jobs.progress = await submit(client, 'progress', 'x');
  if (withFail) {
    out.jobs.fail = await submit(client, 'fail', 'x');
    out.jobs.exception = await submit(client, 'exception', 'x');
  }
  out.jobs.high = await submit(client, 'upper', 'high', { priority: 'HIGH', unique: 'u-high' });
  // A client that sent OPTION_REQ "exceptions" gets the WORK_EXCEPTION.
  const withExceptions = gearmanode.client({ servers: [server] });
  withExceptions.on('error', e => fail('exceptions client error: ' + e));
  out.option = await new Promise(resolve => {
    const js = withExceptions.jobServers[0];
    js.once('option', o => resolve(String(o)));
    js.setOption('exceptions');
  });
  out.jobs.optexception = await submit(withExceptions, 'exception', 'x');
  withExceptions.close();
  // 3 MiB both ways, in many reads of the library's sockets.
  const big = 'gearwork'.repeat((3 << 20) / 8);
  const bigEv = await submit(client, 'upper', big);
  out.jobs.big = bigEv.length === 1 && bigEv[0] === 'complete:' + big.toUpperCase() ? ['complete:3 MiB upper'] : bigEv;
  // Twenty jobs at once on one client connection.
  const many = await Promise.all([...Array(20).keys()].map(i => submit(client, 'upper', 'm' + i)));
  out.jobs.many = many.map(ev => ev.join(','));
  // Two clients submit the same unique: one run, both get its result.
  const other = gearmanode.client({ servers: [server] });
  other.on('error', e => fail('second client error: ' + e));
  const first = submit(client, 'coalesce', 'a', { unique: 'co-1' });
  await created(client, 'coalesce');
  const second = submit(other, 'coalesce', 'b', { unique: 'co-1' });
  await created(other, 'coalesce');
  coalesceSubmitted = true;
  out.jobs.coalesce = [(await first).join(','), (await second).join(',')];
  other.close();
  // RESET_ABILITIES while the worker holds a background "keep" job, then
  // only "after"; the server has read each step when the worker's ECHO
  // comes back.
  const keep = await submitBackground('keep', 'k');
  const kept = await keepHeld;
  await new Promise((resolve, reject) => worker.resetAbilities(e => e ? reject(e) : resolve()));
  await workerEcho('reset');
  worker.addFunction('after', job => { run('after'); job.workComplete('after reset'); });
  kept.workComplete('kept');
  await workerEcho('kept');
  out.keep = await status(keep);
  // A background "upper" waits: no worker can do it any more.
  const orphan = await submitBackground('upper', 'orphan');
  out.jobs.after = await submit(client, 'after', 'x');
  out.afterReset = await status(orphan);
  process.stdout.write(JSON.stringify(out) + '\n');
  client.close();
  worker.close();
})().catch(e => fail(e.stack));
