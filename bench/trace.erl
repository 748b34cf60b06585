%% trace: the cost of tracing one process on a busy node; the twin of
%% trace.lua.  Rounds of a ring alternate between no trace and
%% erlang:trace(Member, true, [send, 'receive', timestamp]) on one member,
%% with a tracer that counts the events.
%%   erl -noshell -run trace main [P] [H] [ROUNDS] [S] -s init stop
-module(trace).
-export([main/0, main/1]).

main() -> main([]).

main(Args) ->
    Procs = bench:int_arg(Args, 1, 1000),
    Hops = bench:int_arg(Args, 2, 300000),
    Rounds = bench:int_arg(Args, 3, 7),
    Spinners = bench:int_arg(Args, 4, 0),
    Me = self(),
    Members = lists:foldl(fun(_, [N | _] = Acc) ->
                                  [spawn(fun() -> relay(N, Me) end) | Acc]
                          end, [Me], lists:seq(2, Procs)),
    Next = hd(Members),
    Watched = lists:nth(Procs div 2, Members),
    Busy = [spawn(fun spin/0) || _ <- lists:seq(1, Spinners)],
    Tracer = spawn(fun() -> counter(Me, 0) end),
    round(Next, Hops),
    {Plain, Traced, PlainCpu, TracedCpu, Events} =
        lists:foldl(
          fun(_, {Ps, Ts, Pcs, Tcs, E}) ->
                  {P, Pc} = round(Next, Hops),
                  erlang:trace(Watched, true,
                               [send, 'receive', timestamp, {tracer, Tracer}]),
                  {T, Tc} = round(Next, Hops),
                  erlang:trace(Watched, false, [send, 'receive', timestamp]),
                  Tracer ! {done, self()},
                  N = receive {count, C} -> C end,
                  {[P | Ps], [T | Ts], [Pc | Pcs], [Tc | Tcs], E + N}
          end, {[], [], [], [], 0}, lists:seq(1, Rounds)),
    [exit(B, kill) || B <- Busy],
    P50 = bench:percentile(lists:sort(Plain), 50),
    T50 = bench:percentile(lists:sort(Traced), 50),
    bench:note("~b processes, ~b hops a round, ~b rounds, ~b spinners, "
               "~b schedulers; ~b trace events in all",
               [Procs, Hops, Rounds, Spinners,
                erlang:system_info(schedulers_online), Events]),
    bench:report("hop_untraced", P50 / Hops * 1.0e9, "ns/hop", "lower"),
    bench:report("hop_one_traced", T50 / Hops * 1.0e9, "ns/hop", "lower"),
    bench:report("traced_ratio", T50 / P50, "x", "lower"),
    Pc50 = bench:percentile(lists:sort(PlainCpu), 50),
    Tc50 = bench:percentile(lists:sort(TracedCpu), 50),
    bench:report("cpu_hop_untraced", Pc50 / Hops * 1.0e9, "ns/hop", "lower"),
    bench:report("cpu_hop_one_traced", Tc50 / Hops * 1.0e9, "ns/hop", "lower"),
    bench:report("cpu_traced_ratio", Tc50 / Pc50, "x", "lower").

%% A round: its wall time, and the CPU time of the runtime's threads (s).
round(Next, Hops) ->
    T0 = bench:now(),
    {C0, _} = erlang:statistics(runtime),
    Next ! Hops - 1,
    loop(Next),
    {C1, _} = erlang:statistics(runtime),
    {bench:now() - T0, (C1 - C0) / 1000}.

loop(Next) ->
    receive
        0 -> ok;
        K when is_integer(K) -> Next ! K - 1, loop(Next)
    end.

relay(Next, Main) ->
    receive
        0 -> Main ! 0, relay(Next, Main);
        K -> Next ! K - 1, relay(Next, Main)
    end.

spin() -> spin(0).
spin(X) -> spin_n(X, 100000).
spin_n(X, 0) -> spin(X);
spin_n(X, N) -> spin_n(X + N, N - 1).

%% Counts the events until {done, _}; one still on its way then (trace
%% messages and done come from different senders) counts in the next round.
counter(Main, N) ->
    receive
        {done, _} -> Main ! {count, N}, counter(Main, 0);
        _ -> counter(Main, N + 1)
    end.
