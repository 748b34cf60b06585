%% pingpong: round trips between two processes; the twin of pingpong.lua.
%%   erl -noshell -run pingpong main [R] -s init stop
-module(pingpong).
-export([main/0, main/1]).

main() -> main([]).

main(Args) ->
    Rounds = bench:int_arg(Args, 1, 100000),
    Me = self(),
    Peer = spawn(fun() -> echo(Me) end),
    T0 = bench:now(),
    ping(Peer, 1, Rounds),
    Elapsed = bench:now() - T0,
    bench:note("~b round trips", [Rounds]),
    bench:report("round_trip", Elapsed / Rounds * 1.0e9, "ns", "lower").

ping(_, I, Rounds) when I > Rounds -> ok;
ping(Peer, I, Rounds) ->
    Peer ! I,
    receive I -> ping(Peer, I + 1, Rounds) end.

echo(Peer) ->
    receive M -> Peer ! M, echo(Peer) end.
