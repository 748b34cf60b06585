%% fairness: ping-pong round-trip latency while 2 x schedulers processes
%% spin in busy loops; the twin of fairness.lua.
%%   erl -noshell -run fairness main [R] -s init stop
-module(fairness).
-export([main/0, main/1]).

main() -> main([]).

main(Args) ->
    Rounds = bench:int_arg(Args, 1, 2000),
    Spinners = 2 * erlang:system_info(schedulers_online),
    Spin = [spawn(fun spin/0) || _ <- lists:seq(1, Spinners)],
    Me = self(),
    Peer = spawn(fun() -> echo(Me) end),
    Lat = lists:sort(ping(Peer, 1, Rounds, [])),
    [exit(P, kill) || P <- [Peer | Spin]],
    bench:note("~b round trips, ~b spinners, clock monotonic_time",
               [Rounds, Spinners]),
    bench:report("round_trip_p50", bench:percentile(Lat, 50) * 1.0e6, "us", "lower"),
    bench:report("round_trip_p99", bench:percentile(Lat, 99) * 1.0e6, "us", "lower"),
    bench:report("round_trip_max", lists:last(Lat) * 1.0e6, "us", "lower").

ping(_, I, Rounds, Acc) when I > Rounds -> Acc;
ping(Peer, I, Rounds, Acc) ->
    T = bench:now(),
    Peer ! I,
    receive I -> ok end,
    ping(Peer, I + 1, Rounds, [bench:now() - T | Acc]).

spin() -> spin().

echo(Peer) ->
    receive M -> Peer ! M, echo(Peer) end.
