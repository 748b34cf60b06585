%% many_to_one: S senders each send M messages to one receiver; the twin of
%% many_to_one.lua.
%%   erl -noshell -run many_to_one main [S] [M] -s init stop
-module(many_to_one).
-export([main/0, main/1]).

main() -> main([]).

main(Args) ->
    Senders = bench:int_arg(Args, 1, 100),
    PerSender = bench:int_arg(Args, 2, 10000),
    Me = self(),
    Pids = [spawn(fun() -> sender(Me, PerSender) end)
            || _ <- lists:seq(1, Senders)],
    Total = Senders * PerSender,
    T0 = bench:now(),
    [P ! go || P <- Pids],
    drain(Total),
    Elapsed = bench:now() - T0,
    bench:note("~b senders x ~b messages", [Senders, PerSender]),
    bench:report("throughput", Total / Elapsed, "msg/s", "higher").

sender(Sink, Count) ->
    receive go -> send_n(Sink, 1, Count) end.

send_n(_, I, Count) when I > Count -> ok;
send_n(Sink, I, Count) -> Sink ! I, send_n(Sink, I + 1, Count).

drain(0) -> ok;
drain(K) -> receive _ -> drain(K - 1) end.
