#!/usr/bin/perl
# A Gearman worker for the compat tests, on Perl's Gearman::Worker.
# Usage: perl worker.pl HOST:PORT[,HOST:PORT...] JOBS [prefix=PREFIX] NAME=BEHAVIOUR[:TIMEOUT_MS]...
# It runs JOBS jobs, then exits. Behaviours:
#   echo      returns the workload
#   upper     returns the workload in upper case
#   stream    sends data "d1", status 1/2, warning "w1", data "d2",
#             then returns "done"
#   fail      sends WORK_FAIL
#   exception sends WORK_EXCEPTION "boom"
#   die       dies with "boom": Gearman::Worker then sends WORK_EXCEPTION
#             and WORK_FAIL for the job
#   hang      prints "holding HANDLE" and never answers (the test kills
#             the process)
#   sleep3    sleeps three seconds, then returns "slept"
#   gate      waits until the file the workload names exists, then sends
#             status 1/2, data "d1" and warning "w1", and returns "gated"
#   flaky     dies with "not yet" on the first two runs of each workload,
#             returns "ok after N runs" on the third
# Each job's function and workload length are printed to stdout.
use strict;
use warnings;
use Gearman::Worker;

my ($server, $jobs, @specs) = @ARGV;
my @prefix;
if (@specs && $specs[0] =~ /^prefix=(.*)$/) {
    @prefix = (prefix => $1);
    shift @specs;
}
my $worker = Gearman::Worker->new(job_servers => [split /,/, $server], @prefix);
my %runs;
$| = 1;

my %behaviours = (
    echo  => sub { return $_[0]->arg },
    upper => sub { return uc $_[0]->arg },
    stream => sub {
        my ($job) = @_;
        $worker->send_work_data($job, 'd1');
        $worker->send_work_status($job, 1, 2);
        $worker->send_work_warning($job, 'w1');
        $worker->send_work_data($job, 'd2');
        return 'done';
    },
    fail      => sub { $worker->send_work_fail($_[0]); return undef },
    exception => sub { $worker->send_work_exception($_[0], 'boom'); return undef },
    die       => sub { die "boom\n" },
    sleep3    => sub { sleep 3; return "slept" },
    gate      => sub {
        my ($job) = @_;
        select undef, undef, undef, 0.05 until -e $job->arg;
        $worker->send_work_status($job, 1, 2);
        $worker->send_work_data($job, 'd1');
        $worker->send_work_warning($job, 'w1');
        return 'gated';
    },
    flaky     => sub { my $n = ++$runs{ $_[0]->arg }; die "not yet\n" if $n < 3; return "ok after $n runs" },
    hang      => sub { print "holding ", $_[0]->handle, "\n"; sleep 3600; return undef },
);

for my $spec (@specs) {
    my ($name, $rest) = split /=/, $spec, 2;
    my ($behaviour, $timeout) = split /:/, $rest;
    my $fn = $behaviours{$behaviour} or die "unknown behaviour $behaviour\n";
    my $wrapped = sub {
        my ($job) = @_;
        print $job->{func}, ' ', length($job->arg), "\n";
        return $fn->($job);
    };
    if (defined $timeout) {
        $worker->register_function($name, $timeout, $wrapped);
    }
    else {
        $worker->register_function($name, $wrapped);
    }
}

my $done = 0;
$worker->work(
    on_complete => sub { $done++ },
    on_fail     => sub { $done++ },
    stop_if     => sub { $done >= $jobs },
);
