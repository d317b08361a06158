<?php
// An interactive Gearman client for the compat tests, on PHP's gearman
// extension. Usage: php client.php HOST PORT [noexceptions]
// It reads one JSON request per line on stdin and answers each with one
// JSON line on stdout.
//   {"op":"do","prio":"normal|high|low","fn":F,"payload":P,"unique":U}
//       -> {"result":R,"rc":N}
//   {"op":"bg","prio":...,"fn":F,"payload":P,"unique":U} -> {"handle":H}
//   {"op":"status","handle":H} -> {"status":[known,running,num,den]}
//   {"op":"tasks","fn":F,"payload":P} -> {"events":[[kind,data],...]}
//       (addTask + runTasks, recording every callback)
//   {"op":"size","fn":F,"size":N}
//       -> {"result":R,"want":"N:MD5"}: submits N bytes of a fixed pattern
//          to a worker that answers with their length and MD5
//   {"op":"ping","payload":P} -> {"ok":B}
//   {"op":"ustatus","unique":U} -> {"status":[known,running,num,den]}
//       (jobStatusByUniqueKey)
//   {"op":"taskstatus","handles":[H...]}
//       -> {"events":[[context,known,running,num,den],...],"ok":B}
//       (addTaskStatus with each handle as its context, then runTasks)
//   {"op":"timeout","fn":F,"ms":N} -> {"rc":N}: doNormal with setTimeout(N)
//   {"op":"many","fn":F,"n":N}
//       -> {"complete":{context:result},"created":N,"ok":B}: N tasks at
//          once, by turns addTask, addTaskHigh, addTaskLow and
//          addTaskBackground, payload and context "t<i>", then runTasks
[$host, $port] = [$argv[1], (int)$argv[2]];

$client = new GearmanClient();
// libgearman sends OPTION_REQ "exceptions" on every connection.
$client->addServer($host, $port);
$client->setTimeout(120000);

function pattern(int $n): string {
    $unit = '';
    for ($i = 0; $i < 256; $i++) { $unit .= chr($i); }
    return substr(str_repeat($unit, intdiv($n, 256) + 1), 0, $n);
}

while (($line = fgets(STDIN)) !== false) {
    $req = json_decode($line, true);
    $unique = $req['unique'] ?? null;
    $out = [];
    switch ($req['op']) {
    case 'do':
        $m = ['normal' => 'doNormal', 'high' => 'doHigh', 'low' => 'doLow'][$req['prio'] ?? 'normal'];
        $res = $client->$m($req['fn'], $req['payload'], $unique);
        $out = ['result' => $res, 'rc' => $client->returnCode()];
        break;
    case 'bg':
        $m = ['normal' => 'doBackground', 'high' => 'doHighBackground', 'low' => 'doLowBackground'][$req['prio'] ?? 'normal'];
        $out = ['handle' => $client->$m($req['fn'], $req['payload'], $unique), 'rc' => $client->returnCode(),
            'jobHandle' => $client->doJobHandle()];
        break;
    case 'status':
        $out = ['status' => $client->jobStatus($req['handle'])];
        break;
    case 'tasks':
        $events = [];
        $client->setDataCallback(function ($t) use (&$events) { $events[] = ['data', $t->data()]; });
        $client->setWarningCallback(function ($t) use (&$events) { $events[] = ['warning', $t->data()]; });
        $client->setStatusCallback(function ($t) use (&$events) {
            $events[] = ['status', $t->taskNumerator() . '/' . $t->taskDenominator()];
        });
        $client->setCompleteCallback(function ($t) use (&$events) { $events[] = ['complete', $t->data()]; });
        $client->setFailCallback(function ($t) use (&$events) { $events[] = ['fail', '']; });
        $client->setExceptionCallback(function ($t) use (&$events) { $events[] = ['exception', $t->data()]; });
        $client->addTask($req['fn'], $req['payload'], null, $unique);
        $ok = $client->runTasks();
        $client->clearCallbacks();
        $out = ['events' => $events, 'ok' => $ok];
        break;
    case 'size':
        $payload = pattern($req['size']);
        $res = $client->doNormal($req['fn'], $payload);
        $out = ['result' => $res, 'want' => strlen($payload) . ':' . md5($payload), 'rc' => $client->returnCode()];
        break;
    case 'ping':
        $out = ['ok' => $client->ping($req['payload'])];
        break;
    case 'ustatus':
        $out = ['status' => $client->jobStatusByUniqueKey($req['unique'])];
        break;
    case 'taskstatus':
        $events = [];
        $client->setStatusCallback(function ($t, $context) use (&$events) {
            $events[] = [$context, $t->isKnown(), $t->isRunning(), $t->taskNumerator(), $t->taskDenominator()];
        });
        // The extension answers false for every field of a task whose
        // GearmanTask object is gone: the tasks are kept until runTasks ends.
        $tasks = [];
        foreach ($req['handles'] as $h) {
            $tasks[] = $client->addTaskStatus($h, $h);
        }
        $ok = $client->runTasks();
        $client->clearCallbacks();
        $out = ['events' => $events, 'ok' => $ok];
        break;
    case 'timeout':
        $client->setTimeout($req['ms']);
        @$client->doNormal($req['fn'], 'x');
        $out = ['rc' => $client->returnCode()];
        $client->setTimeout(120000);
        break;
    case 'many':
        $complete = [];
        $created = 0;
        $client->setCompleteCallback(function ($t, $context) use (&$complete) { $complete[$context] = $t->data(); });
        $client->setCreatedCallback(function ($t) use (&$created) { $created++; });
        $add = ['addTask', 'addTaskHigh', 'addTaskLow', 'addTaskBackground'];
        $tasks = [];
        for ($i = 0; $i < $req['n']; $i++) {
            $tasks[] = $client->{$add[$i % 4]}($req['fn'], "t$i", "t$i");
        }
        $ok = $client->runTasks();
        $client->clearCallbacks();
        ksort($complete, SORT_NATURAL);
        $out = ['complete' => $complete, 'created' => $created, 'ok' => $ok];
        break;
    default:
        $out = ['error' => 'unknown op ' . $req['op']];
    }
    echo json_encode($out), "\n";
}
