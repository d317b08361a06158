// abraxas (npm) on two servers for the compat tests, run by
// TestAbraxasTwoServers. Usage: node abraxas-servers.js HOST:PORT HOST:PORT
// A worker connection to both servers (maxJobs 2: it sends two
// GRAB_JOB_UNIQs when woken) serves abs_up (upper case, after 50 ms), and
// sets maxqueue 2 for abs_q (which no worker serves) through its
// connections, as a text admin command between binary packets. A client on
// both servers submits 30 abs_up jobs at once; a client on the first server
// alone submits three background abs_q jobs, of which the third is refused.
// Then the scenario writes "stop" to stderr and waits for a line on stdin
// (the first server stops meanwhile); once the client has seen it go, ten
// abs_up jobs go to the second server. It writes "restart" and waits for a
// line again (the first server starts again on its address); once the
// worker is back on it, a new client on the first server alone gets an
// abs_up job done. It prints one JSON line.
'use strict';
const Gearman = require('abraxas');
const readline = require('readline');

const [s1, s2] = process.argv.slice(2);
const out = {};
const fail = (why) => {
  process.stderr.write('abraxas-servers.js: ' + why + '\n' + JSON.stringify(out) + '\n');
  process.exit(1);
};
setTimeout(() => fail('timed out'), 150000).unref();
const describe = (err) => String(err && (err.message || err));

const lines = readline.createInterface({ input: process.stdin });
const nextLine = () => new Promise(resolve => lines.once('line', resolve));

const worker = Gearman.Client.connect({ servers: [s1, s2], defaultEncoding: 'utf8', maxJobs: 2 });
let active = 0;
out.maxActive = 0;
worker.registerWorker('abs_up', task => {
  active++;
  out.maxActive = Math.max(out.maxActive, active);
  return new Promise(resolve => setTimeout(() => { active--; resolve(task.payload.toUpperCase()); }, 50));
});
// workerUp resolves once the worker has a connection to each of n servers.
const workerUp = (n) => new Promise(resolve => {
  const check = () => worker.getConnectedServers().length >= n ? resolve() : setTimeout(check, 20);
  check();
});

const submit = (c, fn, payload, options) => new Promise(resolve => {
  c.submitJob(fn, options || {}, payload, (err, res) => resolve(err ? 'error ' + describe(err) : res));
});
const submitBg = (c, fn, payload) => new Promise(resolve => {
  c.submitJobBg(fn, payload, (err) => resolve(err ? 'error ' + describe(err) : 'created'));
});

(async () => {
  const client = Gearman.Client.connect({ servers: [s1, s2], defaultEncoding: 'utf8' });
  await workerUp(2);
  // abraxas's own maxqueue calls adminSingleResult on the wrong object;
  // this is the call it means to make on each connection.
  out.maxqueueSet = await Promise.all(worker.getConnectedServers().map(conn => new Promise(resolve => {
    conn.socket.adminSingleResult('maxqueue abs_q 2', (err, res) => resolve(err ? 'error ' + describe(err) : 'ok'));
  })));
  const payloads = [...Array(30).keys()].map(i => 'job ' + i);
  out.many = await Promise.all(payloads.map(p => submit(client, 'abs_up', p)));

  const first = Gearman.Client.connect({ servers: [s1], defaultEncoding: 'utf8' });
  out.maxqueue = [];
  for (const p of ['q1', 'q2', 'q3']) {
    out.maxqueue.push(await submitBg(first, 'abs_q', p));
  }
  first.disconnect();

  process.stderr.write('stop\n');
  await nextLine();
  // The client and the worker find out that the first server went away.
  await new Promise(resolve => {
    const check = () => client.getConnectedServers().length === 1 && worker.getConnectedServers().length === 1
      ? resolve() : setTimeout(check, 20);
    check();
  });
  out.failover = await Promise.all([...Array(10).keys()].map(i => submit(client, 'abs_up', 'after ' + i)));

  process.stderr.write('restart\n');
  await nextLine();
  await workerUp(2);
  const again = Gearman.Client.connect({ servers: [s1], defaultEncoding: 'utf8' });
  out.again = await submit(again, 'abs_up', 'back again');
  console.log(JSON.stringify(out));
  again.disconnect();
  client.disconnect();
  worker.disconnect();
  lines.close();
})().catch(e => fail(e.stack || e));
