%% ring: a token passed round a ring of P processes; the twin of ring.lua.
%%   erl -noshell -run ring main [P] [H] -s init stop
-module(ring).
-export([main/0, main/1]).

main() -> main([]).

main(Args) ->
    Procs = bench:int_arg(Args, 1, 1000),
    Hops = bench:int_arg(Args, 2, 1000000),
    Me = self(),
    Next = lists:foldl(fun(_, N) -> spawn(fun() -> relay(N, Me) end) end,
                       Me, lists:seq(2, Procs)),
    T0 = bench:now(),
    Next ! Hops - 1,
    loop(Next),
    Elapsed = bench:now() - T0,
    bench:note("~b processes, ~b hops", [Procs, Hops]),
    bench:report("hop", Elapsed / Hops * 1.0e9, "ns/hop", "lower").

loop(Next) ->
    receive
        0 -> ok;
        K -> Next ! K - 1, loop(Next)
    end.

relay(Next, Main) ->
    receive
        0 -> Main ! 0;
        K -> Next ! K - 1, relay(Next, Main)
    end.
