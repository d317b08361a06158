#!/usr/bin/perl
# An interactive Gearman client for the compat tests, on Perl's
# Gearman::Client. Usage: perl client.pl HOST:PORT[,HOST:PORT...]
# It reads one JSON request per line on stdin and answers each with one
# JSON line on stdout.
#   {"op":"do","fn":F,"payload":P,"uniq":U,"high":1} -> {"result":R|null}
#       ("priority":"low" or "high" in place of "high":1)
#   {"op":"bg","fn":F,"payload":P,"uniq":U}         -> {"handle":H}
#   {"op":"status","handle":H}   -> {"status":[known,running,num,den]}
#   {"op":"tasks","fn":F,"payload":P} -> {"events":[[kind,data],...]}
#   {"op":"size","fn":F,"size":N}
#       -> {"len":L,"same":0|1}: the result of echoing N bytes
#   {"op":"retry","fn":F,"payload":P,"retries":N}
#       -> {"events":[[kind,data],...]}: a task with retry_count N
#   {"op":"many","fn":F,"n":N,"uniques":0|1}
#       -> {"results":[R|"fail",...]}: one task set of N tasks with
#          payloads "p0".."pN-1"; with "uniques":1 these are their uniques
#          too, by which the client spreads them over its servers, and
#          without, all go to one server the client could connect to
# A request with "prefix":X goes through a client made with prefix => X,
# one with "exceptions":0 through a client made without exceptions => 1.
use strict;
use warnings;
use Gearman::Client;
use JSON::PP;

my $server = shift @ARGV or die "usage: client.pl HOST:PORT[,HOST:PORT...]\n";
my @servers = split /,/, $server;
my %clients;
sub client_for {
    my ($prefix, $exceptions) = @_;
    $prefix //= '';
    $exceptions //= 1;
    return $clients{"$exceptions/$prefix"} //= Gearman::Client->new(job_servers => [@servers],
        exceptions => $exceptions, ($prefix ne '' ? (prefix => $prefix) : ()));
}
my $json   = JSON::PP->new->canonical;
$| = 1;

sub pattern {
    my ($n) = @_;
    my $unit = join '', map { chr } 0 .. 255;
    return substr($unit x (int($n / 256) + 1), 0, $n);
}

while (my $line = <STDIN>) {
    my $req = $json->decode($line);
    my %opts;
    $opts{uniq} = $req->{uniq} if defined $req->{uniq};
    $opts{priority} = 'high' if $req->{high};
    $opts{priority} = $req->{priority} if defined $req->{priority};
    my $client = client_for($req->{prefix}, $req->{exceptions});
    my $out;
    if ($req->{op} eq 'do') {
        my $res = $client->do_task($req->{fn}, $req->{payload}, \%opts);
        $out = { result => $res ? $$res : undef };
    }
    elsif ($req->{op} eq 'bg') {
        $out = { handle => $client->dispatch_background($req->{fn}, $req->{payload}, \%opts) };
    }
    elsif ($req->{op} eq 'status') {
        my $st = $client->get_status($req->{handle});
        $out = { status => $st ? [map { defined $_ ? $_ + 0 : undef } @$st] : undef };
    }
    elsif ($req->{op} eq 'tasks') {
        my @events;
        my $ts = $client->new_task_set;
        $ts->add_task($req->{fn}, $req->{payload}, {
            %opts,
            on_data      => sub { push @events, ['data', ${ $_[0] }] },
            on_warning   => sub { push @events, ['warning', ${ $_[0] }] },
            on_status    => sub { push @events, ['status', "$_[0]/$_[1]"] },
            on_complete  => sub { push @events, ['complete', ${ $_[0] }] },
            on_fail      => sub { push @events, ['fail', ''] },
            on_exception => sub { push @events, ['exception', ref $_[0] ? ${ $_[0] } : $_[0]] },
        });
        $ts->wait(timeout => 120);
        $out = { events => \@events };
    }
    elsif ($req->{op} eq 'retry') {
        my @events;
        my $ts = $client->new_task_set;
        $ts->add_task($req->{fn}, $req->{payload}, {
            %opts,
            retry_count  => $req->{retries},
            on_retry     => sub { push @events, ['retry', "$_[0]"] },
            on_complete  => sub { push @events, ['complete', ${ $_[0] }] },
            on_fail      => sub { push @events, ['fail', ''] },
            on_exception => sub { push @events, ['exception', ref $_[0] ? ${ $_[0] } : $_[0]] },
        });
        $ts->wait(timeout => 120);
        $out = { events => \@events };
    }
    elsif ($req->{op} eq 'many') {
        my @results = ('none') x $req->{n};
        my $ts = $client->new_task_set;
        for my $i (0 .. $req->{n} - 1) {
            $ts->add_task($req->{fn}, "p$i", {
                %opts,
                ($req->{uniques} ? (uniq => "p$i") : ()),
                on_complete => sub { $results[$i] = ${ $_[0] } },
                on_fail     => sub { $results[$i] = 'fail' },
            });
        }
        $ts->wait(timeout => 120);
        $out = { results => \@results };
    }
    elsif ($req->{op} eq 'size') {
        my $payload = pattern($req->{size});
        my $res = $client->do_task($req->{fn}, $payload, \%opts);
        $out = $res ? { len => length($$res), same => ($$res eq $payload ? 1 : 0) } : { len => undef };
    }
    else {
        $out = { error => "unknown op $req->{op}" };
    }
    print $json->encode($out), "\n";
}
