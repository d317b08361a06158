<?php
// A Gearman worker for the compat tests, on PHP's gearman extension.
// Usage: php worker.php HOST PORT JOBS NAME=BEHAVIOUR[:TIMEOUT_S]...
// It runs JOBS jobs, then exits. Behaviours:
//   echo      returns the workload
//   digest    returns "LENGTH:MD5" of the workload
//   stream    sends data "d1", status 1/2, warning "w1", data "d2",
//             then returns "done"
//   fail      sends WORK_FAIL
//   exception sends WORK_EXCEPTION "boom"
//   sleep4    sleeps four seconds, then returns "slept"
//   record    appends "function:workload\n" to the file named by
//             $GEARWORK_RECORD and returns the workload
//   uniq      returns "UNIQUE/WORKLOAD"
//   hold      sends status 2/5, then waits until the file named by the
//             workload exists, and returns "held"
// Options among the specs: id=ID (setId), uniq (addOptions
// GEARMAN_WORKER_GRAB_UNIQ), timeout=MS (setTimeout; reaching it ends the
// worker with "timeout" on stdout).
// Each job's function and workload are also written to stdout.
[$host, $port, $jobs] = [$argv[1], (int)$argv[2], (int)$argv[3]];

$behaviours = [
    'echo' => function (GearmanJob $job) { return $job->workload(); },
    'digest' => function (GearmanJob $job) {
        return strlen($job->workload()) . ':' . md5($job->workload());
    },
    'stream' => function (GearmanJob $job) {
        $job->sendData('d1');
        $job->sendStatus(1, 2);
        $job->sendWarning('w1');
        $job->sendData('d2');
        return 'done';
    },
    'fail' => function (GearmanJob $job) {
        $job->sendFail();
        return null;
    },
    'exception' => function (GearmanJob $job) {
        $job->sendException('boom');
        return null;
    },
    'sleep4' => function (GearmanJob $job) {
        sleep(4);
        return 'slept';
    },
    'uniq' => function (GearmanJob $job) { return $job->unique() . '/' . $job->workload(); },
    'hold' => function (GearmanJob $job) {
        $job->sendStatus(2, 5);
        while (!file_exists($job->workload())) {
            usleep(20000);
        }
        return 'held';
    },
    'record' => function (GearmanJob $job) {
        file_put_contents(getenv('GEARWORK_RECORD'), $job->functionName() . ':' . $job->workload() . "\n", FILE_APPEND);
        return $job->workload();
    },
];

$worker = new GearmanWorker();
$worker->addServer($host, $port);
$worker->setTimeout(120000);
foreach (array_slice($argv, 4) as $spec) {
    if ($spec === 'uniq') {
        $worker->addOptions(GEARMAN_WORKER_GRAB_UNIQ);
        continue;
    }
    [$name, $rest] = explode('=', $spec, 2);
    if ($name === 'id') {
        $worker->setId($rest);
        continue;
    }
    if ($name === 'timeout') {
        $worker->setTimeout((int)$rest);
        continue;
    }
    $parts = explode(':', $rest);
    $fn = $behaviours[$parts[0]];
    $timeout = (int)($parts[1] ?? 0);
    $worker->addFunction($name, function (GearmanJob $job) use ($fn) {
        fwrite(STDOUT, $job->functionName() . ' ' . strlen($job->workload()) . "\n");
        return $fn($job);
    }, null, $timeout);
}
for ($i = 0; $i < $jobs; $i++) {
    // work() reports false for a job that failed; only other codes are
    // errors of the worker itself.
    if (@$worker->work()) {
        continue;
    }
    if ($worker->returnCode() === GEARMAN_TIMEOUT) {
        echo "timeout\n";
        exit(0);
    }
    if (!in_array($worker->returnCode(), [GEARMAN_WORK_FAIL, GEARMAN_WORK_EXCEPTION], true)) {
        fwrite(STDERR, "work failed: " . $worker->error() . " (" . $worker->returnCode() . ")\n");
        exit(1);
    }
}
