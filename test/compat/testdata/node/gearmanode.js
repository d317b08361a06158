// A scenario on the npm package gearmanode (client and worker), run by
// TestGearmanodeScenario: node gearmanode.js HOST:PORT HOST:PORT. One
// worker and one round-robin client on both servers; it prints one JSON
// object of what the client saw.
'use strict';
const gearmanode = require('gearmanode');


const servers = process.argv.slice(2).map(a => {
  const i = a.lastIndexOf(':');
  return { host: a.slice(0, i), port: Number(a.slice(i + 1)) };
});
const out = { jobs: {}, echo: [], servers: {} };
const fail = (why) => {
  process.stderr.write('gearmanode.js: ' + why + '\n' + JSON.stringify(out) + '\n');
  process.exit(1);
};
setTimeout(() => fail('timed out'), 60000).unref();

const worker = gearmanode.worker({ servers: servers, withUnique: true });
worker.on('error', e => fail('worker error: ' + e));
worker.addFunction('upper', job => job.workComplete(job.payload.toString().toUpperCase()));
worker.addFunction('progress', job => {
  job.sendWorkData('part');
  job.reportStatus(1, 2);
  job.reportWarning('careful');
  job.reportStatus(2, 2);
  job.workComplete('done');
});
worker.addFunction('fail', job => job.reportError());
worker.addFunction('exception', job => job.reportException('broken'));
worker.addFunction('uniq', job => job.workComplete(job.unique + '/' + job.payload));
// seenRunning holds the background jobs whose client has seen them
// running at 1/3: the worker ends a job only then, so that what the poll
// sees does not depend on how fast this process runs.
const seenRunning = new Set();
worker.addFunction('bg', job => setTimeout(() => {
  job.reportStatus(1, 3);
  const key = String(job.payload);
  const done = () => seenRunning.has(key) ? job.workComplete('') : setTimeout(done, 20);
  done();
}, 200));

const client = gearmanode.client({ servers: servers, loadBalancing: 'RoundRobin' });
client.on('error', e => fail('client error: ' + e));

// run submits a job and resolves with the events its client saw.
function run(key, name, payload, options) {
  return new Promise(resolve => {
    const ev = [];
    const job = client.submitJob(name, payload, Object.assign({ toStringEncoding: 'utf8' }, options));
    if (job instanceof Error) { fail(key + ': ' + job); }
    job.on('workData', d => ev.push('data:' + d));
    job.on('warning', d => ev.push('warning:' + d));
    job.on('status', s => ev.push('status:' + s.percent_done_num + '/' + s.percent_done_den));
    job.on('complete', () => { ev.push('complete:' + job.response); done(); });
    job.on('failed', () => { ev.push('failed'); done(); });
    job.on('exception', d => { ev.push('exception:' + d); done(); });
    job.on('timeout', () => { ev.push('timeout'); done(); });
    job.on('error', e => { ev.push('error:' + e); done(); });
    function done() {
      out.jobs[key] = ev;
      out.servers[key] = job.jobServerUid;
      resolve(ev);
    }
  });
}

// background submits a background job and polls GET_STATUS until the
// server no longer knows it; it resolves with the distinct statuses seen.
function background(key) {
  return new Promise(resolve => {
    const seen = [];
    const job = client.submitJob('bg', key, { background: true });
    job.on('created', () => job.getStatus());
    job.on('status', s => {
      const st = (s.known ? 'known' : 'unknown') + (s.running ? ' running ' : ' ') + s.percent_done_num + '/' + s.percent_done_den;
      if (seen[seen.length - 1] !== st) { seen.push(st); }
      if (st === 'known running 1/3') { seenRunning.add(key); }
      if (!s.known) {
        out.jobs[key] = seen;
        resolve();
        return;
      }
      setTimeout(() => job.getStatus(), 20);
    });
  });
}

function echo(js) {
  return new Promise(resolve => {
    js.once('echo', d => { out.echo.push(d.toString()); resolve(); });
    js.echo('ping ' + js.getUid());
  });
}

(async () => {
  for (const js of client.jobServers) { await echo(js); }
  await run('upper', 'upper', 'hello');
  await run('progress', 'progress', 'x');
  await run('fail', 'fail', 'x');
  await run('exception', 'exception', 'x');
  await run('uniq', 'uniq', 'payload', { unique: 'u-1', priority: 'HIGH' });
  await run('low', 'upper', 'low', { priority: 'LOW' });
  // 3 MiB both ways, in many reads of the library's socket.
  const big = 'gearwork'.repeat((3 << 20) / 8);
  await run('big', 'upper', big);
  if (out.jobs.big.length === 1 && out.jobs.big[0] === 'complete:' + big.toUpperCase()) {
    out.jobs.big = ['complete:3 MiB upper'];
  }
  // Several jobs at once: the worker answers each with PRE_SLEEP and
  // waits for a NOOP before its next GRAB_JOB.
  await Promise.all([1, 2, 3, 4, 5, 6].map(i => run('burst' + i, 'upper', 'b' + i)));
  await background('bg1');
  await background('bg2');
  process.stdout.write(JSON.stringify(out) + '\n');
  client.close();
  worker.close();
})().catch(e => fail(e.stack));
