%% selective: a selective receive that skips 1,000 queued messages that do
%% not match; the twin of selective.lua (both of its figures are the same
%% receive in Erlang).
%%   erl -noshell -run selective main [R] [QUEUED] -s init stop
-module(selective).
-export([main/0, main/1]).

main() -> main([]).

main(Args) ->
    Rounds = bench:int_arg(Args, 1, 10000),
    Queued = bench:int_arg(Args, 2, 1000),
    Me = self(),
    [Me ! {noise, I} || I <- lists:seq(1, Queued)],
    T0 = bench:now(),
    loop(Me, 1, Rounds),
    Elapsed = bench:now() - T0,
    bench:note("~b selective receives past ~b queued messages", [Rounds, Queued]),
    PerReceive = Elapsed / Rounds * 1.0e9,
    bench:report("skip_1000_matcher", PerReceive, "ns", "lower"),
    bench:report("skip_1000_pattern", PerReceive, "ns", "lower").

loop(_, I, Rounds) when I > Rounds -> ok;
loop(Me, I, Rounds) ->
    Me ! {wanted, I},
    receive {wanted, I} -> loop(Me, I + 1, Rounds) end.
